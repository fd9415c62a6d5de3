//! Identifier newtypes. Each is parsed once where it enters the system.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use uuid::Uuid;

/// Why an identifier was rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdError {
    #[error("{what} id must be 1-64 chars of a-z, 0-9, '-' or '_': {got:?}")]
    Slug { what: &'static str, got: String },
    #[error("not a UUID: {0:?}")]
    Uuid(String),
}

macro_rules! slug_id {
    ($(#[$m:meta])* $name:ident, $what:literal) => {
        $(#[$m])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub const LEN_MAX: usize = 64;

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                if is_slug(s) { Ok(Self(s.to_owned())) } else { Err(IdError::Slug { what: $what, got: s.to_owned() }) }
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                s.parse()
            }
        }

        impl From<$name> for String {
            fn from(p: $name) -> String {
                p.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

/// 1-64 chars of `a-z`, `0-9`, `-`, `_`: safe in URLs, file names and SQL text.
fn is_slug(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

slug_id!(
    /// A posyandu, e.g. `banjar-purwaharja-melati-01`. The unit of scope for documents.
    PosyanduId,
    "posyandu"
);
slug_id!(
    /// A unit of the health-administration hierarchy (province ... posyandu). A posyandu
    /// unit's id is its [`PosyanduId`].
    UnitId,
    "unit"
);
slug_id!(
    /// A person who signs in: kader, puskesmas officer, district admin or reporter.
    UserId,
    "user"
);

impl From<PosyanduId> for UnitId {
    fn from(p: PosyanduId) -> Self {
        Self(p.0)
    }
}

impl UnitId {
    /// The posyandu this unit id names, if the unit is a posyandu (same id format).
    pub fn as_posyandu(&self) -> PosyanduId {
        PosyanduId(self.0.clone())
    }
}

macro_rules! uuid_id {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            pub fn new_random() -> Self {
                Self(Uuid::new_v4())
            }
            pub const fn from_uuid(u: Uuid) -> Self {
                Self(u)
            }
            pub fn as_uuid(&self) -> &Uuid {
                &self.0
            }
            pub fn as_bytes(&self) -> &[u8; 16] {
                self.0.as_bytes()
            }
            pub fn from_bytes(b: [u8; 16]) -> Self {
                Self(Uuid::from_bytes(b))
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Uuid::parse_str(s).map(Self).map_err(|_| IdError::Uuid(s.to_owned()))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

uuid_id!(
    /// One Automerge document. Session and registry ids are derived (UUIDv5) from their
    /// natural key so that every phone names the same session the same way.
    DocId
);
uuid_id!(
    /// One install of the app on one phone (or one server instance). Also its Automerge actor.
    DeviceId
);
uuid_id!(
    /// One visit inside a session document; generated on the phone that records it.
    VisitId
);
uuid_id!(
    /// One person (sasaran) in a posyandu registry.
    PersonId
);

/// Namespace for posync's UUIDv5 document ids. Changing it renames every document: never do.
const DOC_NAMESPACE: Uuid = Uuid::from_u128(0x5f2b_9c1e_7a44_4c0b_9d7e_0b1a_c0de_5e55);

impl DocId {
    /// The session document of one posyandu day.
    pub fn for_session(posyandu: &PosyanduId, date: time::Date) -> Self {
        let name = format!("session/{posyandu}/{date}");
        Self(Uuid::new_v5(&DOC_NAMESPACE, name.as_bytes()))
    }

    /// The registry of people served by one posyandu.
    pub fn for_registry(posyandu: &PosyanduId) -> Self {
        let name = format!("registry/{posyandu}");
        Self(Uuid::new_v5(&DOC_NAMESPACE, name.as_bytes()))
    }
}

impl DeviceId {
    /// The Automerge actor of this device's first incarnation: its 16 id bytes.
    pub fn actor(&self) -> automerge::ActorId {
        automerge::ActorId::from(&self.as_bytes()[..])
    }

    /// The Automerge actor of one incarnation of this device's replica: the 16 id bytes,
    /// then (from incarnation 1 on) a 0xFF tag and the incarnation as 4 big-endian bytes. A
    /// replica file restored from a backup or copied starts a new incarnation, so it never
    /// reuses an (actor, seq) pair its earlier self already wrote with other content. (0xFF
    /// never occurs in UTF-8, so no server actor, `posync-server:<name>`, has this form.)
    pub fn actor_for(&self, incarnation: u32) -> automerge::ActorId {
        if incarnation == 0 {
            return self.actor();
        }
        let mut bytes = self.as_bytes().to_vec();
        bytes.push(INCARNATION_TAG);
        bytes.extend_from_slice(&incarnation.to_be_bytes());
        automerge::ActorId::from(bytes)
    }

    /// Whether `actor` is one of this device's actors (any incarnation). The server accepts
    /// new changes in a device's push only by these.
    pub fn owns_actor(&self, actor: &automerge::ActorId) -> bool {
        DeviceId::of_actor(actor).as_ref() == Some(self)
    }

    /// The device an actor of the form [`DeviceId::actor_for`] belongs to. Genesis and server
    /// actors (`posync-…`) belong to no device, whatever their length.
    pub fn of_actor(actor: &automerge::ActorId) -> Option<DeviceId> {
        let bytes = actor.to_bytes();
        if bytes.starts_with(RESERVED_ACTOR_PREFIX) {
            return None;
        }
        match bytes.len() {
            16 => bytes.try_into().ok().map(DeviceId::from_bytes),
            21 if bytes[16] == INCARNATION_TAG => bytes[..16].try_into().ok().map(DeviceId::from_bytes),
            _ => None,
        }
    }

    /// Whether this id may name a device: not one whose bytes read as a reserved actor.
    pub fn is_assignable(&self) -> bool {
        !self.as_bytes().starts_with(RESERVED_ACTOR_PREFIX)
    }
}

/// Genesis (`posync-genesis:`) and server (`posync-server:`) actors start with this.
const RESERVED_ACTOR_PREFIX: &[u8] = b"posync-";
/// The byte between a device id and its incarnation in an incarnation's actor.
const INCARNATION_TAG: u8 = 0xFF;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn posyandu_ids_are_validated() {
        assert!("melati-01".parse::<PosyanduId>().is_ok());
        assert!("".parse::<PosyanduId>().is_err());
        assert!("Melati".parse::<PosyanduId>().is_err());
        assert!("a/b".parse::<PosyanduId>().is_err());
        assert!("x".repeat(65).parse::<PosyanduId>().is_err());
    }

    #[test]
    fn session_ids_are_deterministic_and_distinct() {
        let p: PosyanduId = "melati-01".parse().expect("id");
        let q: PosyanduId = "mawar-02".parse().expect("id");
        let d = time::macros::date!(2026 - 11 - 23);
        assert_eq!(DocId::for_session(&p, d), DocId::for_session(&p, d));
        assert_ne!(DocId::for_session(&p, d), DocId::for_session(&q, d));
        assert_ne!(DocId::for_session(&p, d), DocId::for_registry(&p));
    }

    #[test]
    fn every_incarnation_actor_belongs_to_its_device_and_no_server_actor_to_any() {
        let d = DeviceId::new_random();
        for inc in [0, 1, 7, u32::MAX] {
            assert!(d.owns_actor(&d.actor_for(inc)), "incarnation {inc}");
            assert!(!DeviceId::new_random().owns_actor(&d.actor_for(inc)));
        }
        assert_ne!(d.actor_for(1), d.actor_for(2));
        for name in ["a1", "posync", "ab3456x", "instance-with-a-long-name"] {
            let server = automerge::ActorId::from(format!("posync-server:{name}").into_bytes());
            assert_eq!(DeviceId::of_actor(&server), None, "server actor {name}");
        }
        let forged = DeviceId::from_bytes(*b"posync-server:a1");
        assert!(!forged.is_assignable());
        assert!(!forged.owns_actor(&forged.actor()), "a device id that reads as a server actor authors nothing");
    }
}
