//! The console's JSON API: the farm, its live updates, the commands and the `whois` answer.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::{events, ApiSession, Changing, Console, Peer};
use crate::commands::whois;
use crate::control::Reply;
use crate::farm_access::FarmCommand;

/// `GET /api/farm`: every node's report, the bucket map and the timeline.
pub(super) async fn farm(State(console): State<Arc<Console>>, _: ApiSession) -> Response {
    match console.farm_json().await {
        Ok(farm) => ([(header::CONTENT_TYPE, "application/json")], farm).into_response(),
        Err(failure) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("cannot gather the farm: {failure:#}"),
        ),
    }
}

/// `GET /api/events`: a `farm` event with the same as `/api/farm` at every change.
pub(super) async fn events(
    State(console): State<Arc<Console>>,
    session: ApiSession,
) -> impl IntoResponse {
    events::stream(console, session.token)
}

/// `POST /api/nodes/NODE/ACTION`: carries `drain`, `stop`, `start` or `restart` to a node.
pub(super) async fn node_command(
    State(console): State<Arc<Console>>,
    _: Changing,
    peer: Peer,
    Path((node, action)): Path<(String, String)>,
) -> Response {
    let Some(command) = parse_command(&action) else {
        return error(
            StatusCode::NOT_FOUND,
            "no such action: drain, stop, start or restart",
        );
    };
    if console.state.config.node_index(&node).is_none() {
        return error(
            StatusCode::NOT_FOUND,
            &format!("no node {node} in the farm"),
        );
    }
    let origin = origin(&console, &peer);
    tracing::info!(%node, %action, %origin, "console: a command for a node");
    let farm = Arc::clone(&console.state.farm);
    let reply = tokio::task::spawn_blocking(move || farm.command(&node, command, &origin)).await;
    match reply {
        Ok(Ok(Reply::Done(text))) => Json(json!({ "ok": true, "text": text })).into_response(),
        Ok(Ok(Reply::Refused(text))) => (
            StatusCode::CONFLICT,
            Json(json!({ "ok": false, "text": text })),
        )
            .into_response(),
        Ok(Ok(Reply::Status(_) | Reply::Farm(_))) => error(
            StatusCode::BAD_GATEWAY,
            "the node answered with a status instead of the command's outcome",
        ),
        Ok(Err(failure)) => error(StatusCode::BAD_GATEWAY, &format!("{failure:#}")),
        Err(failure) => error(StatusCode::INTERNAL_SERVER_ERROR, &failure.to_string()),
    }
}

/// `POST /api/roll/restart`: restarts every node, one after another.
pub(super) async fn roll_restart(
    State(console): State<Arc<Console>>,
    _: Changing,
    peer: Peer,
) -> Response {
    let origin = origin(&console, &peer);
    tracing::info!(%origin, "console: a rolling restart of the farm");
    let farm = Arc::clone(&console.state.farm);
    let started =
        tokio::task::spawn_blocking(move || farm.roll(FarmCommand::Restart, &origin)).await;
    match started {
        Ok(Ok(text)) => Json(json!({ "ok": true, "text": text })).into_response(),
        Ok(Err(refusal)) => (
            StatusCode::CONFLICT,
            Json(json!({ "ok": false, "text": format!("{refusal:#}") })),
        )
            .into_response(),
        Err(failure) => error(StatusCode::INTERNAL_SERVER_ERROR, &failure.to_string()),
    }
}

/// What `GET /api/whois` is asked.
#[derive(Deserialize)]
pub(super) struct WhoisQuery {
    client: String,
    proto: Option<String>,
    port: Option<u16>,
}

/// `GET /api/whois?client=IP[:PORT]&proto=tcp&port=80`: which node handles a client in the
/// current view (the nodes owning no bucket taken as down).
pub(super) async fn whois(
    State(console): State<Arc<Console>>,
    _: ApiSession,
    Query(asked): Query<WhoisQuery>,
) -> Response {
    let down: Vec<String> = console
        .state
        .membership
        .load()
        .nodes
        .iter()
        .filter(|node| node.buckets == 0)
        .map(|node| node.name.clone())
        .collect();
    let query = whois::Query {
        client: asked.client.trim(),
        protocol: asked.proto.as_deref().unwrap_or("tcp"),
        vip_port: asked.port,
        down: &down,
    };
    match whois::answer(&console.state.config, &query) {
        Ok(answer) => {
            Json(json!({ "ok": true, "text": answer.lines().join("\n"), "answer": answer }))
                .into_response()
        }
        Err(refusal) => error(StatusCode::BAD_REQUEST, &format!("{refusal:#}")),
    }
}

/// An answer saying what went wrong.
pub(super) fn error(status: StatusCode, text: &str) -> Response {
    (status, Json(json!({ "ok": false, "text": text }))).into_response()
}

/// The command an action names.
fn parse_command(action: &str) -> Option<FarmCommand> {
    match action {
        "drain" => Some(FarmCommand::Drain),
        "stop" => Some(FarmCommand::Stop),
        "start" => Some(FarmCommand::Start),
        "restart" => Some(FarmCommand::Restart),
        _ => None,
    }
}

/// Who asks, for both nodes' logs.
fn origin(console: &Console, peer: &Peer) -> String {
    format!("the console of {} (from {peer})", console.state.node)
}
