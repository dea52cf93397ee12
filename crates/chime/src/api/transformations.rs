//! `POST …/endpoints/{id}/transformation/test`: runs an endpoint's transformation (or code
//! about to replace it) on a sample, as a delivery would, and shows what would be sent.

use axum::Json;
use axum::extract::{Path, State};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::AppState;
use super::error::{ApiError, ApiResult};
use super::extract::{JsonBody, Principal};
use super::sources::Reshaped;
use super::types::{
    EndpointPath, SourcePath, TransformationErrorOut, TransformationTestIn, TransformationTestOut,
};
use crate::dispatch::transformed::{self, Made, Refused, Spec};
use crate::model::Transformation;
use std::sync::Arc;

use crate::transform::{Error, Input, Output, TransformKey};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(test))
        .routes(routes!(test_source))
}

/// Largest sample `data`, as JSON.
const MAX_SAMPLE: usize = 256 * 1024;

#[utoipa::path(
    post,
    path = "/v1/tenants/{tenant}/endpoints/{endpoint}/transformation/test",
    tag = "endpoints",
    summary = "Run the endpoint's transformation (or `code`) on a sample",
    description = "Runs in the same sandbox and limits as deliveries do. Answers 200 whether \
                   the run succeeded or not: `ok` says which, `error` says why (the limit hit, or \
                   the exception with its line and column), and `logs` and `took_ms` are there \
                   either way. Code that does not compile is an `error` of kind `compile` here \
                   (saving it is refused with 422).",
    params(EndpointPath),
    request_body = TransformationTestIn,
    responses((status = 200, description = "What the transformation made of the sample", body = TransformationTestOut))
)]
async fn test(
    State(state): State<AppState>,
    principal: Principal,
    Path((tenant_id, id)): Path<(String, String)>,
    JsonBody(body): JsonBody<TransformationTestIn>,
) -> ApiResult<Json<TransformationTestOut>> {
    let mut endpoint = super::endpoints::load(&state, &principal, &tenant_id, &id).await?;
    checked_sample(&body)?;
    let code = chosen_code(
        body.code,
        endpoint.settings.transformation.as_ref(),
        "endpoint",
    )?;
    endpoint.settings.transformation = Some(Transformation {
        code,
        enabled: true,
    });
    let spec = Spec::of(&endpoint).expect("an enabled transformation has a spec");
    let target = crate::dispatch::target_of(&endpoint, 1)
        .ok_or_else(|| ApiError::invalid("the endpoint's URL or secret no longer parses"))?;
    let payload = serde_json::json!({"event": body.event, "data": body.data}).to_string();
    let input = transformed::input_of(payload.as_bytes(), None, &spec, &target);
    let (result, mut out) = match sample_run(&state, &endpoint.id, &spec.code, input).await {
        Ok(ran) => ran,
        Err(failed) => return Ok(Json(failed)),
    };
    match transformed::made_of(result, &target) {
        Ok(Made::Cancel(why)) => out.cancelled = Some(why),
        Ok(Made::Send(t)) => {
            let mut headers = endpoint.settings.headers.clone();
            headers.extend(t.headers.clone());
            out.headers = Some(headers);
            out.url = Some(t.url.clone());
            shown(&mut out, t.event, t.body, t.content_type);
        }
        Err(Refused(why)) => invalid_output(&mut out, why),
    }
    Ok(Json(out))
}

#[utoipa::path(
    post,
    path = "/v1/tenants/{tenant}/sources/{source}/transformation/test",
    tag = "sources",
    summary = "Run the source's transformation (or `code`) on a sample request body",
    description = "As for an endpoint: 200 whether the run succeeded or not. `data` is the \
                   provider's body as JSON; the answer shows the event's name and body as \
                   they would be stored.",
    params(SourcePath),
    request_body = TransformationTestIn,
    responses((status = 200, description = "What the transformation made of the sample", body = TransformationTestOut))
)]
async fn test_source(
    State(state): State<AppState>,
    principal: Principal,
    Path((tenant_id, id)): Path<(String, String)>,
    JsonBody(body): JsonBody<TransformationTestIn>,
) -> ApiResult<Json<TransformationTestOut>> {
    let source = super::sources::load(&state, &principal, &tenant_id, &id).await?;
    checked_sample(&body)?;
    let code = chosen_code(body.code, source.settings.transformation.as_ref(), "source")?;
    let input = Input {
        event: body.event,
        data: serde_json::value::to_raw_value(&body.data)
            .map_err(|e| ApiError::invalid(format!("data: {e}")))?,
        headers: Default::default(),
        url: String::new(),
    };
    let (result, mut out) = match sample_run(&state, &source.id, &code, input).await {
        Ok(ran) => ran,
        Err(failed) => return Ok(Json(failed)),
    };
    match super::sources::reshaped(result) {
        Ok(Reshaped::Cancel(why)) => out.cancelled = Some(why),
        Ok(Reshaped::Store {
            name,
            body,
            content_type,
        }) => shown(&mut out, name, body, content_type.to_owned()),
        Err(why) => invalid_output(&mut out, format!("the source's transformation {why}")),
    }
    Ok(Json(out))
}

/// A sample's event name and size, checked before anything runs.
fn checked_sample(body: &TransformationTestIn) -> ApiResult<()> {
    crate::model::parse_event_name(&body.event)
        .map_err(|e| ApiError::invalid(format!("event: {e}")))?;
    if body.data.to_string().len() > MAX_SAMPLE {
        return Err(ApiError::invalid(format!(
            "data: at most {MAX_SAMPLE} bytes of JSON"
        )));
    }
    Ok(())
}

/// The code to try: the one given, else the saved one.
fn chosen_code(
    given: Option<String>,
    saved: Option<&Transformation>,
    owner: &str,
) -> ApiResult<String> {
    match (given, saved) {
        (Some(code), _) => Ok(code),
        (None, Some(t)) => Ok(t.code.clone()),
        (None, None) => Err(ApiError::invalid(format!(
            "the {owner} has no transformation: give one as `code`"
        ))),
    }
}

/// Runs a sample. A test run compiles afresh under a key of its own: it never replaces the
/// compiled code deliveries use. The answer so far (logs, time) with the output, or the
/// whole answer when the run failed.
async fn sample_run(
    state: &AppState,
    owner: &str,
    code: &str,
    input: Input,
) -> Result<(Output, TransformationTestOut), TransformationTestOut> {
    let key = TransformKey::new(format!("test:{owner}"), 0);
    let started = std::time::Instant::now();
    let run = state.transforms.run(key, Arc::from(code), input).await;
    let mut out = TransformationTestOut {
        ok: false,
        event: None,
        payload: None,
        body: None,
        content_type: None,
        headers: None,
        url: None,
        cancelled: None,
        error: None,
        logs: vec![],
        took_ms: started.elapsed().as_secs_f64() * 1000.0,
    };
    match run {
        Ok(result) => {
            out.ok = true;
            out.logs = result.logs.clone();
            out.took_ms = result.took.as_secs_f64() * 1000.0;
            Ok((result, out))
        }
        Err(e) => {
            out.error = Some(error_out(&e));
            Err(out)
        }
    }
}

/// The event and body that would be sent or stored.
fn shown(out: &mut TransformationTestOut, event: String, body: String, content_type: String) {
    if content_type == "application/json" {
        out.payload = serde_json::from_str(&body).ok();
    } else {
        out.body = Some(body);
    }
    out.event = Some(event);
    out.content_type = Some(content_type);
}

fn invalid_output(out: &mut TransformationTestOut, why: String) {
    out.ok = false;
    out.error = Some(TransformationErrorOut {
        kind: "invalid_output".into(),
        message: why,
        line: None,
        column: None,
    });
}

/// A transformation after a create or a change (of an endpoint or a source): `code` is
/// `None` to leave it, `Some(None)` to remove it, `Some(Some(text))` for new code, which must
/// compile in the sandbox (within its limits) and define `handler` (refused with the
/// engine's message, line and column otherwise); `enabled` turns it on or off, keeping the
/// code. New code keeps the current on or off (on, for a first one).
pub(super) async fn patched_transformation(
    state: &AppState,
    tenant_id: &str,
    current: Option<Transformation>,
    code: Option<Option<String>>,
    enabled: Option<bool>,
) -> ApiResult<Option<Transformation>> {
    let mut t = match code {
        None => current,
        Some(None) => None,
        Some(Some(code)) => {
            // Queued under the tenant: one tenant's saves wait for each other, not for others.
            let key = TransformKey::new(format!("check:{tenant_id}"), 0);
            if let Err(e) = state.transforms.check(key, Arc::from(code.as_str())).await {
                return Err(ApiError::invalid(format!("transformation: {e}")));
            }
            Some(Transformation {
                code,
                enabled: current.is_none_or(|t| t.enabled),
            })
        }
    };
    if let Some(on) = enabled {
        match &mut t {
            Some(t) => t.enabled = on,
            None => {
                return Err(ApiError::invalid(
                    "transformation_enabled: there is no transformation to turn on or off",
                ));
            }
        }
    }
    Ok(t)
}

fn error_out(e: &Error) -> TransformationErrorOut {
    let (kind, line, column) = match e {
        Error::Compile { line, column, .. } => ("compile", *line, *column),
        Error::Runtime { line, column, .. } => ("runtime", *line, *column),
        Error::TimeLimit { .. } => ("time_limit", None, None),
        Error::MemoryLimit { .. } => ("memory_limit", None, None),
        Error::OutputTooLarge { .. } => ("output_too_large", None, None),
        Error::CodeTooLarge { .. } => ("code_too_large", None, None),
        Error::BadResult(_) => ("bad_result", None, None),
        _ => ("unavailable", None, None),
    };
    TransformationErrorOut {
        kind: kind.into(),
        message: e.to_string(),
        line,
        column,
    }
}
