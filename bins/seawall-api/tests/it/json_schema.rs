//! A JSON Schema validator for the part of the language the OpenAPI
//! document uses, so that the contract tests can hold the service's
//! answers to the schemas it publishes, `null`s included. It checks
//! `$ref`, `type` (one or several), `enum`, `const`, `properties`,
//! `required`, `additionalProperties`, `propertyNames`, `items`, `oneOf`,
//! `anyOf`, `allOf` and the numeric and length bounds; it leaves out
//! `format` and `pattern`, and reports any other keyword as one it does not
//! know rather than pass a value it did not check.

use serde_json::{Map, Value};

/// Keywords that describe a value without constraining it, or constrain
/// it in a way this validator leaves out.
const NOT_CHECKED: &[&str] = &[
    "description",
    "title",
    "example",
    "examples",
    "default",
    "deprecated",
    "readOnly",
    "writeOnly",
    "format",
    "pattern",
];

/// How deep `$ref`s and combinators may nest before a schema counts as
/// looping on itself.
const MAX_DEPTH: usize = 64;

/// The part of `document` that `reference` points at: a fragment holding
/// a JSON pointer (`#/components/schemas/Problem`). `None` for a
/// reference outside the document or to nothing in it.
pub(crate) fn resolve<'a>(document: &'a Value, reference: &str) -> Option<&'a Value> {
    document.pointer(reference.strip_prefix('#')?)
}

/// Every `$ref` in `document` that does not resolve, as the JSON pointer
/// of the object holding it and the reference.
pub(crate) fn dangling_references(document: &Value) -> Vec<(String, String)> {
    fn walk(document: &Value, at: &str, value: &Value, dangling: &mut Vec<(String, String)>) {
        match value {
            Value::Object(fields) => {
                if let Some(reference) = fields.get("$ref") {
                    let resolves = reference
                        .as_str()
                        .is_some_and(|reference| resolve(document, reference).is_some());
                    if !resolves {
                        dangling.push((at.to_owned(), reference.to_string()));
                    }
                }
                for (key, field) in fields {
                    let key = key.replace('~', "~0").replace('/', "~1");
                    walk(document, &format!("{at}/{key}"), field, dangling);
                }
            }
            Value::Array(items) => {
                for (n, item) in items.iter().enumerate() {
                    walk(document, &format!("{at}/{n}"), item, dangling);
                }
            }
            _ => {}
        }
    }
    let mut dangling = Vec::new();
    walk(document, "", document, &mut dangling);
    dangling
}

/// Where `value` breaks `schema`, its `$ref`s resolved in `document`: one
/// line for each breach, naming the place in the value (`$.children[0]`).
/// Empty when the value keeps to the schema.
pub(crate) fn breaches(document: &Value, schema: &Value, value: &Value) -> Vec<String> {
    let mut found = Vec::new();
    Check {
        document,
        found: &mut found,
    }
    .schema(schema, value, "$", 0);
    found
}

struct Check<'a, 'b> {
    document: &'a Value,
    found: &'b mut Vec<String>,
}

impl Check<'_, '_> {
    fn breach(&mut self, at: &str, what: impl std::fmt::Display) {
        self.found.push(format!("{at}: {what}"));
    }

    /// Whether `value` keeps to `schema`, with no breach recorded.
    fn keeps(&self, schema: &Value, value: &Value, depth: usize) -> bool {
        let mut found = Vec::new();
        Check {
            document: self.document,
            found: &mut found,
        }
        .schema(schema, value, "$", depth);
        found.is_empty()
    }

    fn schema(&mut self, schema: &Value, value: &Value, at: &str, depth: usize) {
        if depth > MAX_DEPTH {
            self.breach(at, "the schema nests too deep (a `$ref` loop?)");
            return;
        }
        let keywords = match schema {
            Value::Bool(true) => return,
            Value::Bool(false) => return self.breach(at, "the schema `false` takes nothing"),
            Value::Object(keywords) => keywords,
            _ => return self.breach(at, format!("{schema} is not a schema")),
        };
        for (keyword, rule) in keywords {
            self.keyword(keywords, keyword, rule, value, at, depth);
        }
    }

    fn keyword(
        &mut self,
        keywords: &Map<String, Value>,
        keyword: &str,
        rule: &Value,
        value: &Value,
        at: &str,
        depth: usize,
    ) {
        match keyword {
            "$ref" => match rule.as_str().and_then(|to| resolve(self.document, to)) {
                Some(target) => self.schema(target, value, at, depth + 1),
                None => self.breach(at, format!("the $ref {rule} does not resolve")),
            },
            "type" => {
                let types: Vec<&str> = match rule {
                    Value::String(name) => vec![name],
                    Value::Array(names) => names.iter().filter_map(Value::as_str).collect(),
                    _ => return self.breach(at, format!("the type {rule} is not one")),
                };
                if !types.iter().any(|name| is_of_type(value, name)) {
                    self.breach(at, format!("{} is not of type {rule}", brief(value)));
                }
            }
            "enum" => {
                if !rule.as_array().is_some_and(|values| values.contains(value)) {
                    self.breach(at, format!("{} is not one of {rule}", brief(value)));
                }
            }
            "const" => {
                if rule != value {
                    self.breach(at, format!("{} is not {rule}", brief(value)));
                }
            }
            "required" => {
                let (Some(fields), Some(names)) = (value.as_object(), rule.as_array()) else {
                    return;
                };
                for name in names.iter().filter_map(Value::as_str) {
                    if !fields.contains_key(name) {
                        self.breach(at, format!("the required field `{name}` is missing"));
                    }
                }
            }
            "properties" => {
                let (Some(fields), Some(properties)) = (value.as_object(), rule.as_object()) else {
                    return;
                };
                for (name, field) in fields {
                    if let Some(property) = properties.get(name) {
                        self.schema(property, field, &format!("{at}.{name}"), depth + 1);
                    }
                }
            }
            "additionalProperties" => {
                let Some(fields) = value.as_object() else {
                    return;
                };
                let declared = keywords.get("properties").and_then(Value::as_object);
                for (name, field) in fields {
                    if declared.is_some_and(|declared| declared.contains_key(name)) {
                        continue;
                    }
                    match rule {
                        Value::Bool(false) => {
                            self.breach(at, format!("the field `{name}` is not declared"));
                        }
                        _ => self.schema(rule, field, &format!("{at}.{name}"), depth + 1),
                    }
                }
            }
            "propertyNames" => {
                let Some(fields) = value.as_object() else {
                    return;
                };
                for name in fields.keys() {
                    let key = Value::String(name.clone());
                    self.schema(rule, &key, &format!("{at} (the name `{name}`)"), depth + 1);
                }
            }
            "items" => {
                let Some(items) = value.as_array() else {
                    return;
                };
                for (n, item) in items.iter().enumerate() {
                    self.schema(rule, item, &format!("{at}[{n}]"), depth + 1);
                }
            }
            "allOf" => {
                for part in rule.as_array().into_iter().flatten() {
                    self.schema(part, value, at, depth + 1);
                }
            }
            "anyOf" | "oneOf" => {
                let parts = rule.as_array().map(Vec::as_slice).unwrap_or_default();
                let kept = parts
                    .iter()
                    .filter(|part| self.keeps(part, value, depth + 1))
                    .count();
                let fits = if keyword == "oneOf" {
                    kept == 1
                } else {
                    kept >= 1
                };
                if !fits {
                    let mut why = Vec::new();
                    for part in parts {
                        Check {
                            document: self.document,
                            found: &mut why,
                        }
                        .schema(part, value, at, depth + 1);
                    }
                    self.breach(
                        at,
                        format!(
                            "{} keeps to {kept} of the {keyword}'s {} schemas ({})",
                            brief(value),
                            parts.len(),
                            why.join("; ")
                        ),
                    );
                }
            }
            "minimum" | "maximum" | "exclusiveMinimum" | "exclusiveMaximum" => {
                let (Some(number), Some(bound)) = (value.as_f64(), rule.as_f64()) else {
                    return;
                };
                let within = match keyword {
                    "minimum" => number >= bound,
                    "maximum" => number <= bound,
                    "exclusiveMinimum" => number > bound,
                    _ => number < bound,
                };
                if !within {
                    self.breach(at, format!("{number} breaks its {keyword} {bound}"));
                }
            }
            "minLength" | "maxLength" | "minItems" | "maxItems" => {
                let length = match (keyword, value) {
                    ("minLength" | "maxLength", Value::String(text)) => text.chars().count(),
                    ("minItems" | "maxItems", Value::Array(items)) => items.len(),
                    _ => return,
                };
                let Some(bound) = rule.as_u64().and_then(|bound| usize::try_from(bound).ok())
                else {
                    return self.breach(at, format!("the {keyword} {rule} is not a length"));
                };
                let within = if keyword.starts_with("min") {
                    length >= bound
                } else {
                    length <= bound
                };
                if !within {
                    self.breach(at, format!("length {length} breaks its {keyword} {bound}"));
                }
            }
            known if NOT_CHECKED.contains(&known) => {}
            unknown => self.breach(
                at,
                format!("the keyword `{unknown}` is not one this validator checks: teach it"),
            ),
        }
    }
}

fn is_of_type(value: &Value, name: &str) -> bool {
    match name {
        "null" => value.is_null(),
        "boolean" => value.is_boolean(),
        "string" => value.is_string(),
        "array" => value.is_array(),
        "object" => value.is_object(),
        "number" => value.is_number(),
        "integer" => {
            value.is_i64() || value.is_u64() || value.as_f64().is_some_and(|n| n.fract() == 0.0)
        }
        _ => false,
    }
}

/// `value`, cut short for a message.
fn brief(value: &Value) -> String {
    let text = value.to_string();
    match text.char_indices().nth(80) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text,
    }
}

#[test]
fn the_validator_takes_what_a_schema_allows_and_only_that() {
    let document = serde_json::json!({"components": {"schemas": {
        "Child": {
            "type": "object",
            "required": ["id", "result"],
            "properties": {
                "id": {"type": "string"},
                "result": {"type": "object"},
                "error": {"type": ["string", "null"]},
                "limit": {"oneOf": [{"$ref": "#/components/schemas/Limit"}, {"type": "null"}]},
                "kind": {"type": "string", "enum": ["a", "b"]},
                "tags": {"type": "array", "items": {"type": "integer", "minimum": 0}},
            },
            "additionalProperties": false,
        },
        "Limit": {"type": "object", "required": ["max"], "properties": {"max": {"type": "integer"}}},
    }}});
    let child = serde_json::json!({"$ref": "#/components/schemas/Child"});
    let kept = serde_json::json!({"id": "1", "result": {}, "error": null, "limit": null,
                                  "kind": "a", "tags": [0, 3]});
    assert_eq!(breaches(&document, &child, &kept), Vec::<String>::new());
    let limited = serde_json::json!({"id": "1", "result": {}, "limit": {"max": 2}});
    assert_eq!(breaches(&document, &child, &limited), Vec::<String>::new());
    for broken in [
        serde_json::json!({"id": "1", "result": null}),
        serde_json::json!({"id": "1"}),
        serde_json::json!({"id": 1, "result": {}}),
        serde_json::json!({"id": "1", "result": {}, "limit": {"max": "2"}}),
        serde_json::json!({"id": "1", "result": {}, "kind": "c"}),
        serde_json::json!({"id": "1", "result": {}, "tags": [-1]}),
        serde_json::json!({"id": "1", "result": {}, "tags": [1.5]}),
        serde_json::json!({"id": "1", "result": {}, "extra": true}),
    ] {
        assert_ne!(
            breaches(&document, &child, &broken),
            Vec::<String>::new(),
            "{broken} breaks the schema"
        );
    }
    let unknown = serde_json::json!({"type": "string", "contains": {}});
    assert_eq!(
        breaches(&document, &unknown, &serde_json::json!("x")).len(),
        1,
        "an unknown keyword is reported, not skipped"
    );
    let dangling = serde_json::json!({"a": [{"$ref": "#/components/schemas/Gone"}],
                                      "b": {"$ref": "#/components/schemas/Limit"}});
    let mut whole = document.clone();
    whole["paths"] = dangling;
    assert_eq!(
        dangling_references(&whole),
        [(
            "/paths/a/0".to_owned(),
            "\"#/components/schemas/Gone\"".to_owned()
        )]
    );
}
