//! `Kiln::HTTP::Resource`: a generic REST object. Create POSTs `body` to the collection `url`,
//! update PUTs (or PATCHes) the item URL, delete DELETEs it, check GETs it and compares.
//!
//! Every request carries the call's `Idempotency-Key`, so a retried create does not make a
//! second object on servers that honour it. HTTP outcomes map to error kinds in the SDK
//! (`5xx` transient, `429` throttled, `401` unauthorized, `404` not-found, `409` conflict,
//! other `4xx` invalid; a URL the allow-list denies is fatal with the host's message).

use std::collections::BTreeMap;

use kiln_plugin_sdk::http::status_error;
use kiln_plugin_sdk::prelude::*;

struct HttpResource;

/// The request settings every call derives from the properties.
struct Api {
    url: String,
    headers: BTreeMap<String, String>,
    timeout_ms: Option<u32>,
}

impl Api {
    fn from_props(props: &Props) -> Result<Self, PluginError> {
        let timeout_ms = match props.opt_integer("timeout_ms")? {
            None => None,
            Some(ms) if ms >= 1 => Some(ms.min(i64::from(u32::MAX)) as u32),
            Some(ms) => {
                return Err(invalid(format!(
                    "property 'timeout_ms' must be positive, got {ms}"
                )));
            }
        };
        Ok(Api {
            url: props.string("url")?.to_string(),
            headers: props.opt_parse("headers")?.unwrap_or_default(),
            timeout_ms,
        })
    }

    /// Sends one request with the user's headers and the idempotency key; any non-2xx/3xx
    /// status becomes the matching error, prefixed with the method and URL.
    fn send(
        &self,
        ctx: &CallContext,
        method: &str,
        url: &str,
        body: Option<&Value>,
    ) -> Result<Response, PluginError> {
        let mut req = Request::new(method, url);
        for (name, value) in &self.headers {
            req = req.header(name, value);
        }
        req = req.header("Idempotency-Key", &ctx.idempotency_key);
        if let Some(body) = body {
            req = req.json(body);
        }
        if let Some(ms) = self.timeout_ms {
            req = req.timeout_ms(ms);
        }
        log::debug("http request", &[("method", method), ("url", url)]);
        let resp = req.send()?;
        match status_error(&resp) {
            Some(e) => Err(e.context(&format!("{method} {url}"))),
            None => Ok(resp),
        }
    }
}

/// The object's id: the response's `id_field` (string or number), else the last path segment
/// of the `Location` header.
fn object_id(resp: &Response, json: &Value, id_field: &str) -> Option<String> {
    match json.get(id_field) {
        Some(Value::String(s)) if !s.is_empty() => return Some(s.clone()),
        Some(Value::Number(n)) => return Some(n.to_string()),
        _ => {}
    }
    let location = resp.header("location")?;
    let path = location.split(['?', '#']).next().unwrap_or("");
    path.rsplit('/').find(|s| !s.is_empty()).map(str::to_string)
}

fn item_url(props: &Props, id: &str) -> Result<String, PluginError> {
    let template = props.string_or("item_url", "{url}/{id}")?;
    let url = props.string("url")?.trim_end_matches('/');
    Ok(template.replace("{url}", url).replace("{id}", id))
}

/// Attributes: the response's top-level fields, then `id`, `item_url` and the whole `body`.
fn attributes(id: &Value, item_url: &str, body: &Value) -> Value {
    let mut attrs = body.as_object().cloned().unwrap_or_default();
    attrs.insert("id".into(), id.clone());
    attrs.insert("item_url".into(), json!(item_url));
    attrs.insert("body".into(), body.clone());
    Value::Object(attrs)
}

/// Where the object lives: from state, else the physical id (which is the same URL).
fn stored_item_url(current: &Current) -> Result<String, PluginError> {
    let state = current.state_value()?;
    Ok(state
        .get("item_url")
        .and_then(Value::as_str)
        .unwrap_or(&current.physical_id)
        .to_string())
}

fn stored_id(current: &Current) -> Result<Value, PluginError> {
    Ok(current
        .state_value()?
        .get("id")
        .cloned()
        .unwrap_or(Value::Null))
}

fn finished(item_url: &str, id: &Value, body: &Value) -> Outcome {
    done(
        item_url,
        json!({"item_url": item_url, "id": id}),
        attributes(id, item_url, body),
    )
}

impl Resource for HttpResource {
    fn describe() -> PluginInfo {
        PluginInfo::new(env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION")).with_type(
            ResourceType::new("Kiln::HTTP::Resource")
                .description(
                    "An object in a REST API: POSTed to a collection URL, then updated, read \
                     and deleted at its item URL.",
                )
                .property(
                    Property::string("url")
                        .description("The collection URL objects are POSTed to.")
                        .required(),
                )
                .property(
                    Property::map("body")
                        .description("The object, as JSON.")
                        .default(json!({}))
                        .update_allowed(),
                )
                .property(
                    Property::string("id_field")
                        .description("Field of the create response holding the object's id.")
                        .default(json!("id")),
                )
                .property(
                    Property::string("item_url")
                        .description("Template of the object's URL, with {url} and {id}.")
                        .default(json!("{url}/{id}")),
                )
                .property(
                    Property::string("update_method")
                        .description("Method that updates the object.")
                        .default(json!("PUT"))
                        .allowed_values(["PUT", "PATCH"])
                        .update_allowed(),
                )
                .property(
                    Property::map("headers")
                        .description("Extra request headers (name to string value).")
                        .default(json!({}))
                        .update_allowed(),
                )
                .property(
                    Property::integer("timeout_ms")
                        .description("Per-request timeout in milliseconds.")
                        .constraint(Constraint::range(Some(1.0), None))
                        .update_allowed(),
                )
                .attribute("id", "The object's id.")
                .attribute("item_url", "The object's URL.")
                .attribute(
                    "body",
                    "The object as the API last returned it (its top-level fields are also \
                     attributes of their own).",
                ),
        )
    }

    fn create(ctx: &CallContext, props: &Props) -> Result<Outcome, PluginError> {
        let api = Api::from_props(props)?;
        let body = Value::Object(props.map("body")?);
        let resp = api.send(ctx, "POST", &api.url, Some(&body))?;
        // A non-JSON body is fine when the Location header names the object.
        let json = resp.json().unwrap_or(Value::Null);
        let id_field = props.string_or("id_field", "id")?;
        let id = object_id(&resp, &json, id_field).ok_or_else(|| {
            fatal(format!(
                "POST {}: HTTP {} response has no '{id_field}' field and no Location header",
                api.url, resp.status
            ))
        })?;
        let item_url = item_url(props, &id)?;
        let returned = if json.is_null() { body } else { json };
        Ok(finished(&item_url, &json!(id), &returned))
    }

    fn update(
        ctx: &CallContext,
        current: &Current,
        _old: &Props,
        new: &Props,
    ) -> Result<UpdateOutcome, PluginError> {
        let api = Api::from_props(new)?;
        let url = stored_item_url(current)?;
        let method = new.string_or("update_method", "PUT")?.to_ascii_uppercase();
        let body = Value::Object(new.map("body")?);
        let json = api
            .send(ctx, &method, &url, Some(&body))?
            .json()
            .unwrap_or(Value::Null);
        let returned = if json.is_null() { body } else { json };
        Ok(finished(&url, &stored_id(current)?, &returned).into())
    }

    fn delete(ctx: &CallContext, current: &Current, props: &Props) -> Result<Outcome, PluginError> {
        let url = stored_item_url(current)?;
        if url.is_empty() {
            return Ok(deleted()); // create never finished: nothing to delete
        }
        match Api::from_props(props)?.send(ctx, "DELETE", &url, None) {
            Ok(_) => Ok(deleted()),
            Err(e) if matches!(e.status(), Some(404 | 410)) => Ok(deleted()),
            Err(e) => Err(e),
        }
    }

    fn check(
        ctx: &CallContext,
        current: &Current,
        props: &Props,
    ) -> Result<CheckReport, PluginError> {
        let url = stored_item_url(current)?;
        let json = match Api::from_props(props)?.send(ctx, "GET", &url, None) {
            Ok(resp) => resp.json()?,
            Err(e) if matches!(e.status(), Some(404 | 410)) => {
                return Ok(report(false, Vec::new(), json!({})));
            }
            Err(e) => Err(e)?,
        };
        let drifted = props
            .map("body")?
            .iter()
            .filter_map(|(key, expected)| {
                let actual = json.get(key).unwrap_or(&Value::Null);
                (actual != expected).then(|| drift(format!("body.{key}"), expected, actual))
            })
            .collect();
        Ok(report(
            true,
            drifted,
            attributes(&stored_id(current)?, &url, &json),
        ))
    }
}

kiln_plugin_sdk::export_resource!(HttpResource);

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_plugin_sdk::http::Header;

    fn resp(headers: &[(&str, &str)]) -> Response {
        Response {
            status: 201,
            headers: headers
                .iter()
                .map(|(n, v)| Header {
                    name: (*n).into(),
                    value: (*v).into(),
                })
                .collect(),
            body: Vec::new(),
        }
    }

    #[test]
    fn id_from_body_or_location() {
        assert_eq!(
            object_id(&resp(&[]), &json!({"id": "a1"}), "id").as_deref(),
            Some("a1")
        );
        assert_eq!(
            object_id(&resp(&[]), &json!({"uid": 42}), "uid").as_deref(),
            Some("42")
        );
        let r = resp(&[("Location", "http://h/items/77/?x=1")]);
        assert_eq!(object_id(&r, &Value::Null, "id").as_deref(), Some("77"));
        assert_eq!(object_id(&resp(&[]), &json!({}), "id"), None);
    }

    #[test]
    fn item_url_template() {
        let p = Props::from_value(json!({"url": "http://h/items/"})).unwrap();
        assert_eq!(item_url(&p, "7").unwrap(), "http://h/items/7");
        let p =
            Props::from_value(json!({"url": "http://h/items", "item_url": "http://h/x?id={id}"}))
                .unwrap();
        assert_eq!(item_url(&p, "7").unwrap(), "http://h/x?id=7");
    }

    #[test]
    fn attributes_expose_response_fields() {
        let a = attributes(
            &json!("7"),
            "http://h/items/7",
            &json!({"name": "n", "id": 7}),
        );
        assert_eq!(a["name"], "n");
        assert_eq!(a["id"], "7");
        assert_eq!(a["item_url"], "http://h/items/7");
        assert_eq!(a["body"]["id"], 7);
    }
}
