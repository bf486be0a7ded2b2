//! The webhook endpoints of the HTTP API: `/v1/webhooks` (create, list), `/v1/webhooks/{id}`
//! (read, change, remove), `/v1/webhooks/{id}/deliveries` (list, `?status=`, `?limit=`) and
//! `/v1/webhooks/{id}/deliveries/{message_id}/retry`, over [`crate::integration::Webhooks`].

use serde::de::DeserializeOwned;
use serde_json::json;

use super::api::{bad_parameter, invalid_request, json_response, limit, not_allowed, with_extra};
use super::http::{Method, Request, Response};
use crate::event::time::format_rfc3339_micros;
use crate::event::{Uuid, ValidationError};
use crate::integration::{DeliveryInfo, EndpointChange, EndpointDraft, IntegrationError, Status};
use crate::system::System;

/// Deliveries a list returns without `limit`.
const DEFAULT_LIST_LIMIT: usize = 100;

pub fn create(system: &System, request: &Request) -> Response {
    let draft: EndpointDraft = match parse(&request.body) {
        Ok(draft) => draft,
        Err(response) => return response,
    };
    match system.webhooks().create(draft) {
        Ok(endpoint) => json_response(201, &endpoint.to_json()),
        Err(error) => integration_error(&error),
    }
}

pub fn list(system: &System) -> Response {
    let endpoints: Vec<serde_json::Value> = system.webhooks().list().iter().map(|e| e.to_json()).collect();
    json_response(200, &json!({ "webhooks": endpoints }))
}

/// `rest` is the path after `/v1/webhooks/`.
pub fn route(system: &System, request: &Request, rest: &str, is_read: bool) -> Response {
    let parts: Vec<&str> = rest.split('/').collect();
    let webhooks = system.webhooks();
    match (parts.as_slice(), &request.method) {
        ([id], _) if is_read => webhooks.get(id).map(|e| json_response(200, &e.to_json())),
        ([id], Method::Patch) => match parse::<EndpointChange>(&request.body) {
            Ok(change) => webhooks.update(id, change).map(|e| json_response(200, &e.to_json())),
            Err(response) => return response,
        },
        ([id], Method::Delete) => webhooks.delete(id).map(|()| Response::empty(204)),
        ([_], _) => return not_allowed("GET, PATCH, DELETE"),
        ([id, "deliveries"], _) if is_read => return deliveries(system, request, id),
        ([_, "deliveries"], _) => return not_allowed("GET"),
        ([id, "deliveries", message, "retry"], Method::Post) => match Uuid::try_parse(message) {
            Ok(message_id) => webhooks
                .retry(id, message_id)
                .map(|()| json_response(202, &json!({"message_id": message_id, "status": "pending"}))),
            Err(_) => Err(IntegrationError::NotFound(format!("no message `{message}`: not a UUID"))),
        },
        ([_, "deliveries", _, "retry"], _) => return not_allowed("POST"),
        _ => return Response::error(404, "not_found", &format!("no such endpoint: {}", request.path)),
    }
    .unwrap_or_else(|error| integration_error(&error))
}

fn deliveries(system: &System, request: &Request, id: &str) -> Response {
    let mut status = None;
    let mut max = DEFAULT_LIST_LIMIT;
    for (name, value) in &request.query {
        match name.as_str() {
            "status" => {
                status = Some(match value.as_str() {
                    "pending" => Status::Pending,
                    "delivered" => Status::Delivered,
                    "failed" => Status::Failed,
                    _ => {
                        return bad_parameter("status", &format!("`{value}` is not one of pending, delivered, failed"))
                    }
                })
            }
            "limit" => match limit(value, crate::integration::MAX_LIST_LIMIT) {
                Ok(value) => max = value,
                Err(response) => return response,
            },
            _ => {}
        }
    }
    match system.webhooks().deliveries(id, status, max) {
        Ok(list) => {
            let list: Vec<serde_json::Value> = list.iter().map(delivery_json).collect();
            json_response(200, &json!({ "deliveries": list }))
        }
        Err(error) => integration_error(&error),
    }
}

fn delivery_json(delivery: &DeliveryInfo) -> serde_json::Value {
    json!({
        "message_id": delivery.message_id,
        "routing_key": delivery.routing_key,
        "status": delivery.status.as_str(),
        "attempts": delivery.attempts,
        "last_status_code": delivery.last_status_code,
        "last_error": delivery.last_error,
        "next_attempt_at": delivery.next_attempt_ns.map(format_rfc3339_micros),
    })
}

/// Parses a JSON body; a syntax error is `invalid_json`, a wrong field type `invalid_request`
/// naming the field.
fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, Response> {
    let mut input = serde_json::Deserializer::from_slice(body);
    let parsed: Result<T, _> = serde_path_to_error::deserialize(&mut input);
    match parsed {
        Ok(value) => Ok(value),
        Err(error) => {
            let field = error.path().to_string();
            let inner = error.into_inner();
            Err(match inner.classify() {
                serde_json::error::Category::Data => invalid_request(
                    &ValidationError::new(if field == "." { "request".to_string() } else { field }, inner.to_string()),
                    None,
                ),
                _ => Response::error(400, "invalid_json", &inner.to_string()),
            })
        }
    }
}

fn integration_error(error: &IntegrationError) -> Response {
    match error {
        IntegrationError::Invalid(error) => invalid_request(error, None),
        IntegrationError::NotFound(message) => Response::error(404, "not_found", message),
        IntegrationError::Conflict(message) => with_extra(409, "conflict", message, json!({})),
        other => Response::error(500, "internal_error", &other.to_string()),
    }
}
