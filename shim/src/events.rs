//! Task events: one bounded channel into one forwarder that publishes them to containerd in order.

use std::collections::HashMap;
use std::time::Duration;

use containerd_shim::event::Event;
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::util::timestamp;
use containerd_shim_protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskOOM, TaskPaused,
    TaskResumed, TaskStart,
};
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::shim::event::Envelope;
use containerd_shim_protos::shim::events::ForwardRequest;
use containerd_shim_protos::shim_async::Events;
use containerd_shim_protos::ttrpc::r#async::TtrpcContext;
use tokio::sync::mpsc;

/// Events waiting for containerd beyond this are a sign of a stuck containerd.
const QUEUE: usize = 1024;
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);

/// An event with the protobuf name containerd decodes it by. Spelled out rather than asked of
/// the message's descriptor: building rust-protobuf's descriptors for the task events took
/// 350 KiB of heap that every shim then kept.
pub trait Published: Event + Message {
    /// The message's full protobuf name (the `Any`'s type URL containerd expects).
    const TYPE_NAME: &'static str;
}

macro_rules! published {
    ($($ty:ident),* $(,)?) => {
        $(impl Published for $ty {
            const TYPE_NAME: &'static str = concat!("containerd.events.", stringify!($ty));
        })*
    };
}

published!(
    TaskCreate,
    TaskStart,
    TaskDelete,
    TaskExit,
    TaskOOM,
    TaskExecAdded,
    TaskExecStarted,
    TaskPaused,
    TaskResumed,
);

impl Published for crate::report::containerd::Violation {
    const TYPE_NAME: &'static str = "google.protobuf.StringValue";
}

/// An event ready for the envelope: its topic, type name and encoded message.
#[derive(Debug)]
pub struct Encoded {
    topic: String,
    type_name: &'static str,
    value: Vec<u8>,
}

impl Encoded {
    /// The topic the event goes out on.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The protobuf name of the encoded message.
    pub fn type_name(&self) -> &'static str {
        self.type_name
    }
}

/// The handle the task service publishes through.
#[derive(Clone, Debug)]
pub struct EventSender {
    tx: mpsc::Sender<Encoded>,
}

impl EventSender {
    /// A sender and the receiving end the forwarder drains.
    pub fn channel() -> (EventSender, mpsc::Receiver<Encoded>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        (EventSender { tx }, rx)
    }

    /// Queues an event; waits when the queue is full so that no exit is ever lost.
    pub async fn send<E: Published>(&self, event: E) {
        let topic = event.topic();
        let value = match event.write_to_bytes() {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(topic, "encode event: {e}");
                return;
            }
        };
        let encoded = Encoded {
            topic: topic.clone(),
            type_name: E::TYPE_NAME,
            value,
        };
        if self.tx.send(encoded).await.is_err() {
            tracing::error!(topic, "event forwarder gone: event dropped");
        }
    }
}

/// The envelope containerd's events service takes for `event` in `namespace`.
fn envelope(event: Encoded, namespace: &str) -> Envelope {
    let mut any = Any::new();
    any.type_url = event.type_name.to_owned();
    any.value = event.value;
    let mut env = Envelope::new();
    env.set_topic(event.topic);
    env.set_namespace(namespace.to_owned());
    // A clock before 1970 leaves the timestamp at zero rather than losing the event.
    env.set_timestamp(timestamp().unwrap_or_default());
    env.set_event(any);
    env
}

/// Publishes queued events to containerd until every sender is gone. The publisher's own queue
/// retries and reconnects.
pub async fn forward(
    publisher: RemotePublisher,
    namespace: String,
    mut rx: mpsc::Receiver<Encoded>,
) {
    while let Some(event) = rx.recv().await {
        let topic = event.topic.clone();
        let mut req = ForwardRequest::new();
        req.set_envelope(envelope(event, &namespace));
        // The publisher ignores the context of a forward: it only queues the envelope.
        let ctx = TtrpcContext {
            mh: Default::default(),
            metadata: HashMap::new(),
            timeout_nano: 0,
        };
        match tokio::time::timeout(PUBLISH_TIMEOUT, publisher.forward(&ctx, req)).await {
            Ok(Ok(_)) => tracing::debug!(topic, "event published"),
            Ok(Err(e)) => tracing::error!(topic, "publish event: {e}"),
            Err(_) => tracing::error!(topic, "publish event: timed out after {PUBLISH_TIMEOUT:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use containerd_shim_protos::protobuf::{MessageDyn, MessageFull};

    fn named<E: Published + MessageFull>() -> (&'static str, String) {
        (E::TYPE_NAME, E::descriptor().full_name().to_owned())
    }

    #[test]
    fn type_names_are_the_descriptors_full_names() {
        let violation = crate::report::containerd::Violation::default();
        assert_eq!(
            crate::report::containerd::Violation::TYPE_NAME,
            violation.descriptor_dyn().full_name()
        );
        for (ours, theirs) in [
            named::<TaskCreate>(),
            named::<TaskStart>(),
            named::<TaskDelete>(),
            named::<TaskExit>(),
            named::<TaskOOM>(),
            named::<TaskExecAdded>(),
            named::<TaskExecStarted>(),
            named::<TaskPaused>(),
            named::<TaskResumed>(),
        ] {
            assert_eq!(ours, theirs);
        }
    }

    #[test]
    fn the_envelope_carries_topic_namespace_and_the_encoded_event() {
        let event = TaskStart {
            container_id: "c1".into(),
            pid: 42,
            ..Default::default()
        };
        let encoded = Encoded {
            topic: event.topic(),
            type_name: TaskStart::TYPE_NAME,
            value: event.write_to_bytes().unwrap(),
        };
        let env = envelope(encoded, "k8s.io");
        assert_eq!(env.topic, "/tasks/start");
        assert_eq!(env.namespace, "k8s.io");
        assert!(env.timestamp.seconds > 0);
        let any = env.event.unwrap();
        assert_eq!(any.type_url, "containerd.events.TaskStart");
        let back = TaskStart::parse_from_bytes(&any.value).unwrap();
        assert_eq!((back.container_id.as_str(), back.pid), ("c1", 42));
    }
}
