//! What the OpenAPI document says beyond the handlers' own `#[utoipa::path]` lines: the
//! title, the bearer-token security scheme, and the errors every operation can answer.

use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ComponentsBuilder, ContentBuilder, InfoBuilder, OpenApi, Ref, RefOr};
use utoipa::{PartialSchema, ToSchema};

use super::types::ErrorOut;

const BEARER: &str = "bearer";

/// The document before the routes are added.
pub fn base() -> OpenApi {
    let mut doc = OpenApi::new(
        InfoBuilder::new()
            .title("chime")
            .version(env!("CARGO_PKG_VERSION"))
            .description(Some(
                "Webhook delivery: tenants, endpoints, events, deliveries. Every call under \
                 /v1 takes `Authorization: Bearer <token>`: the admin token reaches every \
                 tenant, a tenant token its own tenant only. Errors are `{\"code\", \
                 \"detail\"}`.",
            ))
            .build(),
        utoipa::openapi::Paths::new(),
    );
    doc.components = Some(
        ComponentsBuilder::new()
            .security_scheme(
                BEARER,
                SecurityScheme::Http(
                    HttpBuilder::new()
                        .scheme(HttpAuthScheme::Bearer)
                        .description(Some("An admin or tenant API token"))
                        .build(),
                ),
            )
            .schema(ErrorOut::name(), ErrorOut::schema())
            .build(),
    );
    doc.security = Some(vec![SecurityRequirement::new(BEARER, Vec::<String>::new())]);
    doc
}

/// Errors any authenticated operation can answer, besides those its handler lists: the
/// extractors (auth, path, query, body) and the store answer them for every route alike.
const COMMON_ERRORS: &[(&str, &str)] = &[
    ("400", "The body is not JSON (`malformed_json`)"),
    ("401", "No token, or not a valid one (`unauthorized`)"),
    (
        "403",
        "The token may not reach this tenant or resource (`forbidden`)",
    ),
    ("404", "The tenant or resource does not exist (`not_found`)"),
    (
        "408",
        "The request body did not arrive in time (`request_timeout`)",
    ),
    (
        "413",
        "The body is larger than the server accepts (`payload_too_large`)",
    ),
    (
        "422",
        "An input is not valid (`invalid_request`, `refused_target`)",
    ),
    ("500", "chime failed; the detail is in its log (`internal`)"),
    (
        "503",
        "The database is unavailable or full; retry later (`unavailable`)",
    ),
];

fn error_response(description: &str) -> RefOr<Response> {
    RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name(ErrorOut::name())))
                    .build(),
            )
            .build(),
    )
}

/// Adds the common errors to every operation that is authenticated (operations marked
/// `security(())`, such as `/healthz`, answer none of them), and makes each operation id
/// unique by its tag (`endpoints_list`, not `list`), as client generators need.
pub fn finish(mut doc: OpenApi) -> OpenApi {
    for item in doc.paths.paths.values_mut() {
        for op in operations(item) {
            if let (Some(tag), Some(id)) =
                (op.tags.as_ref().and_then(|t| t.first()), &op.operation_id)
            {
                op.operation_id = Some(format!("{}_{id}", tag.replace('-', "_")));
            }
            let public = op
                .security
                .as_ref()
                .is_some_and(|s| s.iter().all(|r| r == &SecurityRequirement::default()));
            if public {
                continue;
            }
            for (status, description) in COMMON_ERRORS {
                op.responses
                    .responses
                    .entry((*status).to_owned())
                    .or_insert_with(|| error_response(description));
            }
        }
    }
    doc
}

fn operations(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        item.get.as_mut(),
        item.post.as_mut(),
        item.put.as_mut(),
        item.patch.as_mut(),
        item.delete.as_mut(),
    ]
    .into_iter()
    .flatten()
}

#[cfg(test)]
mod tests {
    /// The document is checked in (`crates/chime/openapi.json`) so that an API change shows
    /// in the diff. After a deliberate change, write the new one with
    /// `CHIME_BLESS=1 cargo nextest run -p chime openapi`.
    #[test]
    fn openapi_document_matches_the_checked_in_snapshot() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json");
        let now = super::super::openapi_document()
            .to_pretty_json()
            .expect("serializes")
            + "\n";
        if std::env::var_os("CHIME_BLESS").is_some() {
            std::fs::write(path, &now).expect("write the snapshot");
        }
        let checked_in = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            checked_in == now,
            "the OpenAPI document changed; if on purpose, run with CHIME_BLESS=1 and commit \
             crates/chime/openapi.json"
        );
    }
}
