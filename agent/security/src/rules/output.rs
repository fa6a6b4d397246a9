//! Output templates: `text %field text`, rendered per alert into the output line and the
//! `output_fields` map.
//!
//! `%name` reads the longest field name at that point (`%fd.name.` is `fd.name` then a
//! dot); `%%` is a literal percent; a `%` not followed by a field name is itself.
//! `%container.info` expands to the container and pod fields, as Falco's `-pk` does. A
//! missing value prints `<NA>` and is `null` in `output_fields`.

use std::collections::BTreeMap;

use super::fields::{EvalCtx, Field, FieldError};

/// What `%container.info` stands for.
pub const CONTAINER_INFO: &str = "container_id=%container.id container_image=%container.image.repository container_image_tag=%container.image.tag container_name=%container.name k8s_ns=%k8s.ns.name k8s_pod_name=%k8s.pod.name";

#[derive(Debug, Clone)]
enum Segment {
    Text(String),
    Field(usize),
}

/// A parsed output template.
#[derive(Debug, Clone)]
pub struct OutputTemplate {
    segments: Vec<Segment>,
    fields: Vec<Field>,
}

/// A bad template: message and byte position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputError {
    pub message: String,
    pub pos: usize,
}

impl OutputTemplate {
    pub fn parse(text: &str) -> Result<OutputTemplate, OutputError> {
        let mut template = OutputTemplate {
            segments: Vec::new(),
            fields: Vec::new(),
        };
        template.parse_into(text, 0)?;
        Ok(template)
    }

    fn push_text(&mut self, text: &str) {
        if text.is_empty() {
            return;
        }
        if let Some(Segment::Text(last)) = self.segments.last_mut() {
            last.push_str(text);
        } else {
            self.segments.push(Segment::Text(text.to_string()));
        }
    }

    fn push_field(&mut self, field: Field) {
        let index = match self.fields.iter().position(|f| f.name == field.name) {
            Some(i) => i,
            None => {
                self.fields.push(field);
                self.fields.len() - 1
            }
        };
        self.segments.push(Segment::Field(index));
    }

    fn parse_into(&mut self, text: &str, depth: usize) -> Result<(), OutputError> {
        let bytes = text.as_bytes();
        let mut i = 0;
        let mut literal_start = 0;
        while i < bytes.len() {
            if bytes[i] != b'%' {
                i += 1;
                continue;
            }
            self.push_text(&text[literal_start..i]);
            if bytes.get(i + 1) == Some(&b'%') {
                self.push_text("%");
                i += 2;
                literal_start = i;
                continue;
            }
            let start = i + 1;
            let mut end = start;
            while end < bytes.len()
                && (bytes[end].is_ascii_alphanumeric() || matches!(bytes[end], b'_' | b'.'))
            {
                end += 1;
            }
            if end == start || !bytes[start].is_ascii_alphabetic() {
                self.push_text("%");
                i += 1;
                literal_start = i;
                continue;
            }
            // Back off to the longest known field ("%fd.name." is fd.name and a dot).
            let mut name_end = end;
            let resolved = loop {
                let name = &text[start..name_end];
                let (arg, after) = bracket_arg(text, name_end);
                if name == "container.info" && arg.is_none() && depth == 0 {
                    break Some((None, after));
                }
                match Field::resolve(name, arg) {
                    Ok(field) => break Some((Some(field), after)),
                    Err(FieldError::Invalid(message)) => {
                        return Err(OutputError { message, pos: i });
                    }
                    Err(FieldError::Unknown(_)) => match name.rfind('.') {
                        Some(dot) if dot > 0 => name_end = start + dot,
                        _ => break None,
                    },
                }
            };
            match resolved {
                Some((Some(field), after)) => {
                    self.push_field(field);
                    i = after;
                }
                Some((None, after)) => {
                    self.parse_into(CONTAINER_INFO, depth + 1)?;
                    i = after;
                }
                None => {
                    return Err(OutputError {
                        message: format!("unknown field '%{}'", &text[start..end]),
                        pos: i,
                    });
                }
            }
            literal_start = i;
        }
        self.push_text(&text[literal_start..]);
        Ok(())
    }

    /// The fields in the template, in first-use order.
    pub fn fields(&self) -> &[Field] {
        &self.fields
    }

    /// Appends the rendered text to `out` and, when given, each field's value to
    /// `output_fields`.
    pub fn render(
        &self,
        ctx: &EvalCtx<'_>,
        out: &mut String,
        output_fields: Option<&mut BTreeMap<String, serde_json::Value>>,
    ) {
        let values: Vec<Option<_>> = self.fields.iter().map(|f| f.first_value(ctx)).collect();
        for segment in &self.segments {
            match segment {
                Segment::Text(t) => out.push_str(t),
                Segment::Field(i) => match values.get(*i).and_then(Option::as_ref) {
                    Some(v) => out.push_str(&v.as_text()),
                    None => out.push_str("<NA>"),
                },
            }
        }
        if let Some(map) = output_fields {
            for (field, value) in self.fields.iter().zip(&values) {
                map.insert(
                    field.name.to_string(),
                    value
                        .as_ref()
                        .map_or(serde_json::Value::Null, |v| v.to_json()),
                );
            }
        }
    }
}

/// The container's metadata fields every alert of a known container carries in its
/// `output_fields`, whatever its rule's output names (as Falco's outputs do with
/// `%container.info` and its Kubernetes metadata).
const CONTAINER_FIELDS: &[&str] = &[
    "container.id",
    "container.name",
    "container.image",
    "container.image.repository",
    "container.image.tag",
    "container.image.digest",
    "k8s.ns.name",
    "k8s.pod.name",
    "k8s.pod.uid",
    "k8s.workload.kind",
    "k8s.workload.name",
];

/// Adds [`CONTAINER_FIELDS`] to `map` when the event's container is known to the
/// metadata (values already rendered, absent ones left out).
pub fn add_container_fields(ctx: &EvalCtx<'_>, map: &mut BTreeMap<String, serde_json::Value>) {
    if ctx.container().is_none() {
        return;
    }
    for name in CONTAINER_FIELDS {
        if map.contains_key(*name) {
            continue;
        }
        // The names are this module's own: they resolve.
        let Ok(field) = Field::resolve(name, None) else {
            continue;
        };
        if let Some(v) = field.first_value(ctx) {
            map.insert((*name).to_string(), v.to_json());
        }
    }
}

/// A `[...]` right after a field name: (argument, index after it).
fn bracket_arg(text: &str, at: usize) -> (Option<&str>, usize) {
    if text.as_bytes().get(at) == Some(&b'[')
        && let Some(close) = text[at..].find(']')
    {
        return (Some(&text[at + 1..at + close]), at + close + 1);
    }
    (None, at)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(t: &OutputTemplate) -> Vec<&str> {
        t.fields().iter().map(|f| &*f.name).collect()
    }

    #[test]
    fn parses_fields_and_text() {
        let t = OutputTemplate::parse(
            "Shell (user=%user.name parent=%proc.aname[2] file=%fd.name. image=%container.image.repository:%container.image.tag 100%% % done %proc.name)",
        )
        .unwrap();
        assert_eq!(
            names(&t),
            vec![
                "user.name",
                "proc.aname[2]",
                "fd.name",
                "container.image.repository",
                "container.image.tag",
                "proc.name"
            ]
        );
        let info = OutputTemplate::parse("x %container.info").unwrap();
        assert!(names(&info).contains(&"k8s.pod.name"));
        assert!(names(&info).contains(&"container.id"));
    }

    #[test]
    fn rejects_unknown_fields_with_position() {
        let err = OutputTemplate::parse("file=%fd.nmae user=%user.name").unwrap_err();
        assert_eq!(err.pos, 5);
        assert!(
            err.message.contains("unknown field '%fd.nmae'"),
            "{}",
            err.message
        );
        let err = OutputTemplate::parse("x=%proc.aname[zz]").unwrap_err();
        assert!(
            err.message.contains("index must be a number"),
            "{}",
            err.message
        );
    }
}
