//! Violations as containerd events on `/palisade/violation`, so that `ctr events` and any
//! containerd event subscriber see them beside the task events.
//!
//! containerd only carries an event as a protobuf `Any`; a subscriber decodes the types it knows.
//! A `google.protobuf.StringValue` holding the event's JSON line is one every containerd knows,
//! so `ctr events` prints `{"value":"<json line>"}` rather than an opaque blob.

use std::fmt;

use containerd_shim::protos::protobuf::reflect::MessageDescriptor;
use containerd_shim::protos::protobuf::well_known_types::wrappers::StringValue;
use containerd_shim::protos::protobuf::{
    CodedInputStream, CodedOutputStream, Message, MessageFull, SpecialFields,
};

/// The topic palisade's events are published on.
pub const TOPIC: &str = "/palisade/violation";

/// One event's JSON line, encoded exactly as a `google.protobuf.StringValue` (field 1, string).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Violation {
    /// The event as one JSON line (the same text as in `events.jsonl`).
    pub value: String,
    special_fields: SpecialFields,
}

static DEFAULT: Violation = Violation {
    value: String::new(),
    special_fields: SpecialFields::new(),
};

impl Violation {
    /// The containerd form of an event.
    pub fn of(event: &palisade_events::Event) -> Result<Self, serde_json::Error> {
        Ok(Violation {
            value: serde_json::to_string(event)?,
            special_fields: SpecialFields::new(),
        })
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.value)
    }
}

impl Message for Violation {
    const NAME: &'static str = "StringValue";

    fn is_initialized(&self) -> bool {
        true
    }

    fn merge_from(
        &mut self,
        is: &mut CodedInputStream,
    ) -> containerd_shim::protos::protobuf::Result<()> {
        while let Some(tag) = is.read_raw_tag_or_eof()? {
            match tag {
                10 => self.value = is.read_string()?,
                other => {
                    containerd_shim::protos::protobuf::rt::read_unknown_or_skip_group(
                        other,
                        is,
                        self.special_fields.mut_unknown_fields(),
                    )?;
                }
            }
        }
        Ok(())
    }

    fn write_to_with_cached_sizes(
        &self,
        os: &mut CodedOutputStream,
    ) -> containerd_shim::protos::protobuf::Result<()> {
        if !self.value.is_empty() {
            os.write_string(1, &self.value)?;
        }
        os.write_unknown_fields(self.special_fields.unknown_fields())?;
        Ok(())
    }

    fn compute_size(&self) -> u64 {
        let mut size = 0;
        if !self.value.is_empty() {
            size += containerd_shim::protos::protobuf::rt::string_size(1, &self.value);
        }
        size += containerd_shim::protos::protobuf::rt::unknown_fields_size(
            self.special_fields.unknown_fields(),
        );
        self.special_fields.cached_size().set(size as u32);
        size
    }

    fn special_fields(&self) -> &SpecialFields {
        &self.special_fields
    }

    fn mut_special_fields(&mut self) -> &mut SpecialFields {
        &mut self.special_fields
    }

    fn new() -> Self {
        Violation::default()
    }

    fn default_instance() -> &'static Self {
        &DEFAULT
    }
}

impl MessageFull for Violation {
    /// `google.protobuf.StringValue`'s descriptor: the type URL containerd and `ctr` see.
    fn descriptor() -> MessageDescriptor {
        StringValue::descriptor()
    }
}

impl containerd_shim::protos::protobuf::reflect::ProtobufValue for Violation {
    type RuntimeType = containerd_shim::protos::protobuf::reflect::rt::RuntimeTypeMessage<Self>;
}

impl containerd_shim::event::Event for Violation {
    fn topic(&self) -> String {
        TOPIC.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use containerd_shim::protos::protobuf::MessageDyn;

    #[test]
    fn encodes_as_a_string_value() {
        let v = Violation {
            value: "{\"a\":1}".into(),
            ..Default::default()
        };
        let boxed: Box<dyn MessageDyn> = Box::new(v.clone());
        assert_eq!(
            boxed.descriptor_dyn().full_name(),
            "google.protobuf.StringValue"
        );
        let mut bytes = Vec::new();
        boxed.write_to_vec_dyn(&mut bytes).unwrap();
        let back = StringValue::parse_from_bytes(&bytes).unwrap();
        assert_eq!(back.value, v.value);
        assert_eq!(Violation::parse_from_bytes(&bytes).unwrap().value, v.value);
    }
}
