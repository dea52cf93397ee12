//! Typed ids: each kind of record has its own id type, so a delivery id cannot be passed
//! where an endpoint id is wanted. Ids made by chime are a prefix, `_`, and a lower-case
//! ULID (`ep_01jd…`), time-ordered; tenant ids are the user's own slug or a generated
//! `ten_…`.
//!
//! Parsed at the edge (`parse`, for what a user sends), trusted when read back from the
//! store (`from_stored`). Each wraps an `Arc<str>`: cloning one, which the dispatcher does
//! for every job, copies no text.

use std::fmt;
use std::sync::Arc;

use super::Invalid;

/// A new id with `prefix`: `prefix_` and a lower-case ULID.
pub fn new_id(prefix: &str) -> String {
    let ulid = ulid::Ulid::generate().to_string().to_ascii_lowercase();
    let mut s = String::with_capacity(prefix.len() + 1 + ulid.len());
    s.push_str(prefix);
    s.push('_');
    s.push_str(&ulid);
    s
}

/// Whether `s` has the shape of an id made by `new_id(prefix)`: the prefix, `_`, and 26
/// lower-case ULID characters.
pub fn looks_like_id(s: &str, prefix: &str) -> bool {
    s.strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('_'))
        .is_some_and(|ulid| {
            ulid.len() == 26
                && ulid
                    .bytes()
                    .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
        })
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Arc<str>);

        impl $name {
            /// The prefix of the ids chime makes of this kind.
            pub const PREFIX: &'static str = $prefix;

            /// A new, time-ordered id.
            pub fn new() -> Self {
                Self(Arc::from(new_id($prefix)))
            }

            /// An id a user sent: it must have the shape chime gives this kind of id.
            pub fn parse(s: &str) -> Result<Self, Invalid> {
                if looks_like_id(s, $prefix) {
                    Ok(Self(Arc::from(s)))
                } else {
                    Err(Invalid(format!(
                        "{s:?} is not an id of this kind ({}_ followed by 26 letters and digits)",
                        $prefix
                    )))
                }
            }

            /// An id read back from the store, which only ever holds valid ones.
            pub fn from_stored(s: impl Into<Arc<str>>) -> Self {
                Self(s.into())
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl std::ops::Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&*self.0, f)
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                &*self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                &*self.0 == *other
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0.to_string()
            }
        }

        impl From<$name> for Arc<str> {
            fn from(id: $name) -> Arc<str> {
                id.0
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        /// Read back as written, checked like an id at the edge.
        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                Self::parse(&text).map_err(|e| serde::de::Error::custom(e.0))
            }
        }

        impl rusqlite::ToSql for $name {
            fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
                Ok(rusqlite::types::ToSqlOutput::Borrowed(
                    rusqlite::types::ValueRef::Text(self.0.as_bytes()),
                ))
            }
        }

        impl tokio_postgres::types::ToSql for $name {
            fn to_sql(
                &self,
                ty: &tokio_postgres::types::Type,
                out: &mut bytes::BytesMut,
            ) -> Result<tokio_postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>>
            {
                <&str as tokio_postgres::types::ToSql>::to_sql(&&*self.0, ty, out)
            }

            fn accepts(ty: &tokio_postgres::types::Type) -> bool {
                <&str as tokio_postgres::types::ToSql>::accepts(ty)
            }

            tokio_postgres::types::to_sql_checked!();
        }

        impl<'a> tokio_postgres::types::FromSql<'a> for $name {
            fn from_sql(
                ty: &tokio_postgres::types::Type,
                raw: &'a [u8],
            ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
                <&str as tokio_postgres::types::FromSql>::from_sql(ty, raw).map(Self::from_stored)
            }

            fn accepts(ty: &tokio_postgres::types::Type) -> bool {
                <&str as tokio_postgres::types::FromSql>::accepts(ty)
            }
        }

        impl rusqlite::types::FromSql for $name {
            fn column_result(v: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
                v.as_str().map(Self::from_stored)
            }
        }
    };
}

id_type!(
    /// An endpoint: `ep_…`.
    EndpointId,
    "ep"
);
id_type!(
    /// An event: `evt_…`.
    EventId,
    "evt"
);
id_type!(
    /// A delivery (one event to one endpoint): `dlv_…`.
    DeliveryId,
    "dlv"
);
id_type!(
    /// One attempt of a delivery: `att_…`.
    AttemptId,
    "att"
);
id_type!(
    /// An inbound source: a public URL a provider posts to: `src_…`.
    SourceId,
    "src"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_keep_their_kind() {
        let id = EndpointId::new();
        assert!(id.starts_with("ep_") && id.len() == 29, "{id}");
        assert_eq!(EndpointId::parse(&id).unwrap(), id);
        assert_eq!(serde_json::to_string(&id).unwrap(), format!("\"{id}\""));
        // Another kind's id, wrong length, upper case: refused.
        assert!(EndpointId::parse(&DeliveryId::new()).is_err());
        assert!(EndpointId::parse("ep_123").is_err());
        assert!(EndpointId::parse(&id.to_uppercase()).is_err());
        assert!(EventId::parse("").is_err());
    }
}
