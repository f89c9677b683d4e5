//! Typed access to a node's attributes, with the node named in every error.
//!
//! ONNX writers set `AttributeProto.type`; old ones sometimes do not, so a getter also accepts
//! an attribute whose type is unset but whose matching value field is present. A present
//! attribute of the wrong type is an error, never silently the default.

use crate::error::{ImportError, Result};
use crate::proto::{AttributeProto, NodeProto, TensorProto, attribute_type as at};

/// The node an op is imported from, for attribute access and error messages.
pub struct Ctx<'a> {
    /// The ONNX node.
    pub node: &'a NodeProto,
    /// The node's name for messages (its name, else its first output).
    pub name: String,
    /// The op type.
    pub op: &'a str,
    /// The model's default-domain opset.
    pub opset: i64,
}

impl<'a> Ctx<'a> {
    /// The context of `node` at `opset`.
    pub fn new(node: &'a NodeProto, opset: i64) -> Ctx<'a> {
        let name = match node.name.as_deref() {
            Some(n) if !n.is_empty() => n.to_string(),
            _ => node
                .output
                .first()
                .map_or_else(|| "(unnamed)".to_string(), |o| format!("(output {o})")),
        };
        Ctx {
            node,
            name,
            op: node.op_type.as_deref().unwrap_or(""),
            opset,
        }
    }

    /// An [`ImportError::Node`] for this node.
    pub fn err(&self, message: impl Into<String>) -> ImportError {
        ImportError::Node {
            node: self.name.clone(),
            op: self.op.to_string(),
            opset: self.opset,
            message: message.into(),
        }
    }

    fn attr(&self, name: &str) -> Option<&'a AttributeProto> {
        self.node
            .attribute
            .iter()
            .find(|a| a.name.as_deref() == Some(name))
    }

    fn check(&self, a: &AttributeProto, want: i32, present: bool, what: &str) -> Result<()> {
        match a.r#type {
            Some(t) if t == want => Ok(()),
            None | Some(0) if present => Ok(()),
            _ => Err(self.err(format!(
                "attribute {:?} must be {what}",
                a.name.as_deref().unwrap_or("")
            ))),
        }
    }

    /// An INT attribute.
    pub fn int_opt(&self, name: &str) -> Result<Option<i64>> {
        let Some(a) = self.attr(name) else {
            return Ok(None);
        };
        self.check(a, at::INT, a.i.is_some(), "an int")?;
        Ok(Some(a.i.unwrap_or(0)))
    }

    /// An INT attribute with a default.
    pub fn int(&self, name: &str, default: i64) -> Result<i64> {
        Ok(self.int_opt(name)?.unwrap_or(default))
    }

    /// A FLOAT attribute.
    pub fn float_opt(&self, name: &str) -> Result<Option<f32>> {
        let Some(a) = self.attr(name) else {
            return Ok(None);
        };
        self.check(a, at::FLOAT, a.f.is_some(), "a float")?;
        Ok(Some(a.f.unwrap_or(0.0)))
    }

    /// A FLOAT attribute with a default.
    pub fn float(&self, name: &str, default: f32) -> Result<f32> {
        Ok(self.float_opt(name)?.unwrap_or(default))
    }

    /// An INTS attribute.
    pub fn ints_opt(&self, name: &str) -> Result<Option<Vec<i64>>> {
        let Some(a) = self.attr(name) else {
            return Ok(None);
        };
        self.check(a, at::INTS, true, "a list of ints")?;
        Ok(Some(a.ints.clone()))
    }

    /// A FLOATS attribute.
    pub fn floats_opt(&self, name: &str) -> Result<Option<Vec<f32>>> {
        let Some(a) = self.attr(name) else {
            return Ok(None);
        };
        self.check(a, at::FLOATS, true, "a list of floats")?;
        Ok(Some(a.floats.clone()))
    }

    /// A STRING attribute with a default.
    pub fn string(&self, name: &str, default: &str) -> Result<String> {
        let Some(a) = self.attr(name) else {
            return Ok(default.to_string());
        };
        self.check(a, at::STRING, a.s.is_some(), "a string")?;
        String::from_utf8(a.s.clone().unwrap_or_default())
            .map_err(|_| self.err(format!("attribute {name:?} is not UTF-8")))
    }

    /// A TENSOR attribute.
    pub fn tensor_opt(&self, name: &str) -> Result<Option<&'a TensorProto>> {
        let Some(a) = self.attr(name) else {
            return Ok(None);
        };
        self.check(a, at::TENSOR, a.t.is_some(), "a tensor")?;
        Ok(a.t.as_ref())
    }

    /// The name of input `i`, or `None` when it is absent or empty (an omitted optional input).
    pub fn input_name(&self, i: usize) -> Option<&'a str> {
        self.node
            .input
            .get(i)
            .map(String::as_str)
            .filter(|s| !s.is_empty())
    }

    /// The name of output `i`, or `None` when it is absent or empty (unused).
    pub fn output_name(&self, i: usize) -> Option<&'a str> {
        self.node
            .output
            .get(i)
            .map(String::as_str)
            .filter(|s| !s.is_empty())
    }

    /// A name hint for the kiln nodes this node creates: its first output, sanitised.
    pub fn hint(&self) -> String {
        self.output_name(0)
            .unwrap_or(self.name.as_str())
            .to_string()
    }
}
