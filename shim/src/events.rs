//! Task events: one bounded channel into one forwarder that publishes them to containerd in order.

use std::time::Duration;

use containerd_shim::event::Event;
use containerd_shim::protos::ttrpc::context::Context;
use containerd_shim::publisher::RemotePublisher;
use tokio::sync::mpsc;

/// Events waiting for containerd beyond this are a sign of a stuck containerd.
const QUEUE: usize = 1024;
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);

type Boxed = Box<dyn Event + Send>;

/// The handle the task service publishes through.
#[derive(Clone, Debug)]
pub struct EventSender {
    tx: mpsc::Sender<Boxed>,
}

impl EventSender {
    /// A sender and the receiving end the forwarder drains.
    pub fn channel() -> (EventSender, mpsc::Receiver<Boxed>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        (EventSender { tx }, rx)
    }

    /// Queues an event; waits when the queue is full so that no exit is ever lost.
    pub async fn send(&self, event: impl Event + Send + 'static) {
        let topic = event.topic();
        if self.tx.send(Box::new(event)).await.is_err() {
            tracing::error!(topic, "event forwarder gone: event dropped");
        }
    }
}

/// Publishes queued events to containerd until every sender is gone.
pub async fn forward(publisher: RemotePublisher, namespace: String, mut rx: mpsc::Receiver<Boxed>) {
    while let Some(event) = rx.recv().await {
        let topic = event.topic();
        let publish = publisher.publish(Context::default(), &topic, &namespace, event);
        match tokio::time::timeout(PUBLISH_TIMEOUT, publish).await {
            Ok(Ok(())) => tracing::debug!(topic, "event published"),
            Ok(Err(e)) => tracing::error!(topic, "publish event: {e}"),
            Err(_) => tracing::error!(topic, "publish event: timed out after {PUBLISH_TIMEOUT:?}"),
        }
    }
}
