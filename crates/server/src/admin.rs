//! Admin operations with their rules, for the HTTP admin API and the `posync admin` console
//! commands alike: who may manage what, role-to-unit rules, and an audit entry committed
//! with every change.

use crate::auth::{self, Principal};
use crate::error::ApiError;
use posync_model::Role;
use posync_model::hierarchy::check_user;
use posync_model::{DeviceId, HierarchyFile, Unit, UnitId, UnitKind, UserId, UserSpec};
use posync_proto::ErrorCode;
use posync_store::{
    Actor, ApiKeyRecord, AuditAction, AuditEntry, AuditRecord, DeviceRecord, ImportReport, NewApiKey, NewEnrolment,
    Store, UnitTree, UserRecord,
};
use serde::Serialize;
use std::collections::BTreeSet;
use std::sync::Arc;

/// Who is asking: a district admin over HTTP (bounded to their districts), or the server's
/// console (unbounded: it can read the database anyway).
#[derive(Clone, Debug)]
pub enum AdminCaller {
    Admin(Principal),
    Console(String),
}

impl AdminCaller {
    fn actor(&self) -> Actor {
        match self {
            AdminCaller::Admin(p) => Actor::User { user: p.user.clone(), device: p.device },
            AdminCaller::Console(name) => Actor::Console { name: name.clone() },
        }
    }
}

/// A freshly issued enrolment code: shown once, stored only as a hash.
#[derive(Clone, Debug, Serialize)]
pub struct IssuedCode {
    pub user: UserId,
    pub code: String,
    pub expires_at: i64,
}

/// A freshly created read-only API key: the secret is shown once, stored only as a hash.
#[derive(Clone, Debug, Serialize)]
pub struct IssuedApiKey {
    pub id: String,
    /// `psk_…`: give it to the BI tool as `Authorization: Bearer <key>`.
    pub key: String,
    pub label: String,
    pub unit: UnitId,
    pub role: Role,
    pub created_at: i64,
}

/// Longest API key label (characters).
pub const API_KEY_LABEL_MAX: usize = 100;

#[derive(Clone)]
pub struct AdminService {
    store: Arc<dyn Store>,
}

fn forbidden(msg: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::Forbidden, msg)
}

fn invalid(msg: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::InvalidRequest, msg)
}

impl AdminService {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }

    /// The districts the caller manages; `None` for the console (all).
    async fn districts(&self, caller: &AdminCaller) -> Result<Option<BTreeSet<UnitId>>, ApiError> {
        match caller {
            AdminCaller::Console(_) => Ok(None),
            AdminCaller::Admin(p) if p.role.is_admin() => {
                let user = self.store.user(p.user.clone()).await?.ok_or_else(|| forbidden("unknown user"))?;
                Ok(Some(user.units.into_iter().collect()))
            }
            AdminCaller::Admin(_) => Err(forbidden("only a district admin manages users, devices and units")),
        }
    }

    /// Fails unless every unit lies in one of the caller's districts.
    fn check_in_districts<'a>(
        tree: &UnitTree,
        districts: &Option<BTreeSet<UnitId>>,
        units: impl IntoIterator<Item = &'a UnitId>,
    ) -> Result<(), ApiError> {
        let Some(districts) = districts else { return Ok(()) };
        for unit in units {
            let ok = tree.district_of(unit).is_some_and(|d| districts.contains(d));
            if !ok {
                return Err(forbidden(format!("unit {unit} is not in your district")));
            }
        }
        Ok(())
    }

    /// Load a hierarchy file. Console only: it may create provinces and districts.
    pub async fn import(&self, caller: &AdminCaller, file: HierarchyFile, now: i64) -> Result<ImportReport, ApiError> {
        if !matches!(caller, AdminCaller::Console(_)) {
            return Err(forbidden("hierarchy files are imported at the server console (posync admin import)"));
        }
        let detail = serde_json::json!({ "units": file.units.len(), "users": file.users.len() });
        let audit = AuditEntry::new(now, &caller.actor(), AuditAction::HierarchyImported, "hierarchy", detail);
        Ok(self.store.import_hierarchy(file, audit).await?)
    }

    pub async fn units(&self, caller: &AdminCaller) -> Result<Vec<Unit>, ApiError> {
        let districts = self.districts(caller).await?;
        let tree = self.store.unit_tree().await?;
        Ok(match &districts {
            None => tree.units.clone(),
            Some(d) => {
                tree.units.iter().filter(|u| tree.district_of(&u.id).is_some_and(|x| d.contains(x))).cloned().collect()
            }
        })
    }

    /// Create, rename or move a unit below district level inside the caller's district.
    pub async fn put_unit(&self, caller: &AdminCaller, unit: Unit, now: i64) -> Result<(), ApiError> {
        let districts = self.districts(caller).await?;
        let tree = self.store.unit_tree().await?;
        if districts.is_some() && unit.kind <= UnitKind::District {
            return Err(forbidden("provinces and districts are managed at the server console"));
        }
        let parent = unit.parent.clone().ok_or_else(|| invalid(format!("unit {} needs a parent", unit.id)))?;
        let existing = tree.get(&unit.id).cloned();
        if existing.is_some() {
            Self::check_in_districts(&tree, &districts, [&unit.id])?;
        }
        Self::check_in_districts(&tree, &districts, [&parent])?;
        if let Some(e) = &existing
            && e.kind != unit.kind
        {
            return Err(invalid(format!("unit {} is a {}, not a {}", unit.id, e.kind, unit.kind)));
        }
        let detail = serde_json::json!({
            "kind": unit.kind,
            "from": existing.as_ref().and_then(|e| e.parent.clone()),
            "to": parent,
        });
        let audit =
            AuditEntry::new(now, &caller.actor(), AuditAction::UnitMoved, &unit.id, detail).concerning(Some(&unit.id));
        self.store.save_unit(unit, audit).await?;
        Ok(())
    }

    pub async fn users(&self, caller: &AdminCaller) -> Result<Vec<UserRecord>, ApiError> {
        let districts = self.districts(caller).await?;
        let tree = self.store.unit_tree().await?;
        let users = self.store.users().await?;
        Ok(users.into_iter().filter(|u| Self::check_in_districts(&tree, &districts, &u.units).is_ok()).collect())
    }

    /// Create or update a user: role and units must fit (a kader on posyandu, an officer on
    /// a puskesmas, district staff on a district), all inside the caller's district.
    pub async fn save_user(&self, caller: &AdminCaller, user: UserSpec, now: i64) -> Result<(), ApiError> {
        let districts = self.districts(caller).await?;
        let tree = self.store.unit_tree().await?;
        check_user(&user, |u| tree.get(u).map(|x| x.kind)).map_err(|e| invalid(e.to_string()))?;
        Self::check_in_districts(&tree, &districts, &user.units)?;
        let before = self.store.user(user.id.clone()).await?;
        if let Some(b) = &before {
            Self::check_in_districts(&tree, &districts, &b.units)?;
        }
        let action = match &before {
            Some(b) if b.units != sorted(&user.units) || b.role != user.role => AuditAction::ScopeChanged,
            _ => AuditAction::UserSaved,
        };
        let detail = serde_json::json!({
            "role": user.role,
            "units": user.units,
            "previous_role": before.as_ref().map(|b| b.role),
            "previous_units": before.as_ref().map(|b| b.units.clone()),
        });
        let audit = AuditEntry::new(now, &caller.actor(), action, &user.id, detail).concerning(user.units.first());
        self.store.save_user(user, audit).await?;
        Ok(())
    }

    /// Issue a one-time enrolment code for a user's new phone.
    pub async fn issue_enrolment(&self, caller: &AdminCaller, user: UserId, now: i64) -> Result<IssuedCode, ApiError> {
        let districts = self.districts(caller).await?;
        let tree = self.store.unit_tree().await?;
        let record = self.store.user(user.clone()).await?.ok_or_else(|| not_found(format!("user {user}")))?;
        Self::check_in_districts(&tree, &districts, &record.units)?;
        let code = auth::new_enrolment_code();
        let expires_at = now + auth::ENROLMENT_TTL_SECONDS;
        // The code itself is never logged or audited: only that one was issued.
        let audit = AuditEntry::new(
            now,
            &caller.actor(),
            AuditAction::EnrolmentIssued,
            &user,
            serde_json::json!({ "expires_at": expires_at }),
        )
        .concerning(record.units.first());
        let enrolment =
            NewEnrolment { code_hash: auth::secret_hash(&auth::normalise_code(&code)), user: user.clone(), expires_at };
        self.store.issue_enrolment(enrolment, audit).await?;
        Ok(IssuedCode { user, code, expires_at })
    }

    pub async fn devices(&self, caller: &AdminCaller) -> Result<Vec<DeviceRecord>, ApiError> {
        let districts = self.districts(caller).await?;
        let tree = self.store.unit_tree().await?;
        let users = self.store.users().await?;
        let visible: BTreeSet<UserId> = users
            .into_iter()
            .filter(|u| Self::check_in_districts(&tree, &districts, &u.units).is_ok())
            .map(|u| u.id)
            .collect();
        Ok(self
            .store
            .devices()
            .await?
            .into_iter()
            .filter(|d| d.user.as_ref().is_some_and(|u| visible.contains(u)))
            .collect())
    }

    /// Revoke a device (a lost phone): its refresh fails and its access tokens stop working
    /// at once. What it synced stays.
    pub async fn revoke_device(&self, caller: &AdminCaller, device: DeviceId, now: i64) -> Result<(), ApiError> {
        let devices = self.devices(caller).await?;
        let record = devices
            .iter()
            .find(|d| d.device == device)
            .ok_or_else(|| not_found(format!("device {device} (in your district)")))?;
        let owner = match &record.user {
            Some(u) => self.store.user(u.clone()).await?,
            None => None,
        };
        let audit = AuditEntry::new(
            now,
            &caller.actor(),
            AuditAction::DeviceRevoked,
            device,
            serde_json::json!({ "user": record.user }),
        )
        .concerning(owner.as_ref().and_then(|u| u.units.first()));
        self.store.revoke_device(device, audit).await?;
        Ok(())
    }

    pub async fn audit_log(
        &self,
        caller: &AdminCaller,
        after: u64,
        limit: usize,
    ) -> Result<Vec<AuditRecord>, ApiError> {
        let limit = limit.clamp(1, AUDIT_PAGE_MAX);
        Ok(match self.districts(caller).await? {
            // The console reads everything; a district admin only their districts' entries.
            None => self.store.audit_log(after, limit).await?,
            Some(districts) => self.store.district_audit_log(districts.into_iter().collect(), after, limit).await?,
        })
    }
}

impl AdminService {
    /// Create a read-only API key reading every posyandu under `unit` (in the caller's
    /// district) as `role`, which must be `district_reporter`: reports and exports only.
    pub async fn create_api_key(
        &self,
        caller: &AdminCaller,
        unit: UnitId,
        role: Role,
        label: String,
        now: i64,
    ) -> Result<IssuedApiKey, ApiError> {
        let districts = self.districts(caller).await?;
        if role != Role::DistrictReporter {
            return Err(invalid(
                "kunci API hanya membaca laporan dan ekspor / an API key reads reports and exports only: \
                 its role must be district_reporter",
            ));
        }
        let label = label.trim().to_owned();
        if label.is_empty() || label.chars().count() > API_KEY_LABEL_MAX || label.chars().any(char::is_control) {
            return Err(invalid(format!(
                "label: 1 sampai {API_KEY_LABEL_MAX} karakter / 1 to {API_KEY_LABEL_MAX} characters saying what the key is for"
            )));
        }
        let tree = self.store.unit_tree().await?;
        if tree.get(&unit).is_none() {
            return Err(invalid(format!("unknown unit {unit}")));
        }
        Self::check_in_districts(&tree, &districts, [&unit])?;
        let (id, key) = (auth::new_api_key_id(), auth::new_api_key());
        // The secret is never logged or audited: only the key's id, unit and role.
        let detail = serde_json::json!({ "unit": unit, "role": role, "label": label });
        let audit =
            AuditEntry::new(now, &caller.actor(), AuditAction::ApiKeyCreated, &id, detail).concerning(Some(&unit));
        let new = NewApiKey {
            id: id.clone(),
            key_hash: auth::secret_hash(&key),
            label: label.clone(),
            unit: unit.clone(),
            role,
            created_by: caller.actor().to_string(),
            created_at: now,
        };
        self.store.create_api_key(new, audit).await?;
        Ok(IssuedApiKey { id, key, label, unit, role, created_at: now })
    }

    /// The API keys of units in the caller's districts, with their last use.
    pub async fn api_keys(&self, caller: &AdminCaller) -> Result<Vec<ApiKeyRecord>, ApiError> {
        let districts = self.districts(caller).await?;
        let tree = self.store.unit_tree().await?;
        let keys = self.store.api_keys().await?;
        Ok(keys.into_iter().filter(|k| Self::check_in_districts(&tree, &districts, [&k.unit]).is_ok()).collect())
    }

    /// Revoke an API key: it is refused from the next request on.
    pub async fn revoke_api_key(&self, caller: &AdminCaller, id: &str, now: i64) -> Result<(), ApiError> {
        let keys = self.api_keys(caller).await?;
        let key =
            keys.iter().find(|k| k.id == id).ok_or_else(|| not_found(format!("API key {id} (in your district)")))?;
        let detail = serde_json::json!({ "unit": key.unit, "label": key.label });
        let audit = AuditEntry::new(now, &caller.actor(), AuditAction::ApiKeyRevoked, &key.id, detail)
            .concerning(Some(&key.unit));
        self.store.revoke_api_key(key.id.clone(), audit).await?;
        Ok(())
    }
}

/// Most audit entries in one answer.
pub const AUDIT_PAGE_MAX: usize = 1000;

fn sorted(units: &[UnitId]) -> Vec<UnitId> {
    let set: BTreeSet<UnitId> = units.iter().cloned().collect();
    set.into_iter().collect()
}

fn not_found(what: String) -> ApiError {
    ApiError::new(ErrorCode::NotFound, format!("{what} not found"))
}
