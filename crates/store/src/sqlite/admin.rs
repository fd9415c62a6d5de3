//! Administration on SQLite: the hierarchy, users, devices, enrolments, PINs, API keys and
//! the audit trail, each write audited in its own transaction (rows in [`super::access`]).

use super::{SqliteStore, access};
use crate::{
    AccessStore, ApiKeyAccess, ApiKeyRecord, AuditAction, AuditEntry, AuditRecord, AuditStore, DeviceAccess,
    DeviceRecord, ImportReport, NewApiKey, NewCredential, NewEnrolment, PinAttempt, PinLockout, PinRecord, StoreError,
    UnitTree, UserRecord,
};
use async_trait::async_trait;
use posync_model::{DeviceId, HierarchyFile, UserId, UserSpec};
use rusqlite::TransactionBehavior;

#[async_trait]
impl AccessStore for SqliteStore {
    async fn import_hierarchy(&self, file: HierarchyFile, audit: AuditEntry) -> Result<ImportReport, StoreError> {
        let now = audit.at;
        self.write_audited(audit, move |tx| access::import(tx, &file, now)).await
    }

    async fn unit_tree(&self) -> Result<UnitTree, StoreError> {
        self.read(|conn| access::unit_tree(conn)).await
    }

    async fn save_unit(&self, unit: posync_model::Unit, audit: AuditEntry) -> Result<(), StoreError> {
        self.write_audited(audit, move |tx| access::put_unit(tx, &unit)).await
    }

    async fn save_user(&self, user: UserSpec, audit: AuditEntry) -> Result<(), StoreError> {
        let now = audit.at;
        self.write_audited(audit, move |tx| access::put_user(tx, &user, now)).await
    }

    async fn user(&self, user: UserId) -> Result<Option<UserRecord>, StoreError> {
        self.read(move |conn| access::user(conn, &user)).await
    }

    async fn users(&self) -> Result<Vec<UserRecord>, StoreError> {
        self.read(|conn| access::users(conn)).await
    }

    async fn issue_enrolment(&self, enrolment: NewEnrolment, audit: AuditEntry) -> Result<(), StoreError> {
        let now = audit.at;
        self.write_audited(audit, move |tx| access::issue_enrolment(tx, &enrolment, now)).await
    }

    async fn redeem_enrolment(
        &self,
        code_hash: [u8; 32],
        credential: NewCredential,
        now: i64,
    ) -> Result<UserRecord, StoreError> {
        self.write(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let user = access::redeem_enrolment(&tx, &code_hash, &credential, now)?;
            let actor = crate::Actor::Device { device: credential.device };
            let detail = serde_json::json!({ "user": user.id, "label": credential.label });
            access::append_audit(
                &tx,
                &AuditEntry::new(now, &actor, AuditAction::DeviceEnrolled, credential.device, detail)
                    .concerning(user.units.first()),
            )?;
            tx.commit()?;
            Ok(user)
        })
        .await
    }

    async fn refresh_device(
        &self,
        device: DeviceId,
        refresh_hash: [u8; 32],
        new_expires_at: i64,
        now: i64,
    ) -> Result<UserRecord, StoreError> {
        self.write(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let out = access::refresh_device(&tx, device, &refresh_hash, new_expires_at, now);
            // A refused refresh changes nothing; commit only a successful one.
            if out.is_ok() {
                tx.commit()?;
            }
            out
        })
        .await
    }

    async fn revoke_device(&self, device: DeviceId, audit: AuditEntry) -> Result<(), StoreError> {
        let now = audit.at;
        self.write_audited(audit, move |tx| access::revoke_device(tx, device, now)).await
    }

    async fn devices(&self) -> Result<Vec<DeviceRecord>, StoreError> {
        self.read(|conn| access::devices(conn)).await
    }

    async fn device_access(&self, device: DeviceId) -> Result<Option<DeviceAccess>, StoreError> {
        self.read(move |conn| {
            // One snapshot: the user, the device's state and the scope agree with each other.
            let tx = conn.transaction()?;
            access::device_access(&tx, device)
        })
        .await
    }

    async fn set_pin(&self, user: UserId, pin_hash: String, audit: AuditEntry) -> Result<(), StoreError> {
        let now = audit.at;
        self.write_audited(audit, move |tx| access::set_pin(tx, &user, &pin_hash, now)).await
    }

    async fn pin_of(&self, user: UserId) -> Result<Option<PinRecord>, StoreError> {
        self.read(move |conn| access::pin_of(conn, &user)).await
    }

    async fn pin_attempt(&self, user: UserId, now: i64, lockout: PinLockout) -> Result<PinAttempt, StoreError> {
        self.write(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let attempt = access::pin_attempt(&tx, &user, now, lockout)?;
            tx.commit()?;
            Ok(attempt)
        })
        .await
    }

    async fn pin_succeeded(
        &self,
        user: UserId,
        pin_hash: String,
        credential: NewCredential,
        now: i64,
    ) -> Result<UserRecord, StoreError> {
        self.write(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let record = access::pin_succeeded(&tx, &user, &pin_hash, &credential, now)?;
            access::append_audit(&tx, &crate::access::signed_in_audit(&record, &credential, now))?;
            tx.commit()?;
            Ok(record)
        })
        .await
    }

    async fn create_api_key(&self, key: NewApiKey, audit: AuditEntry) -> Result<(), StoreError> {
        self.write_audited(audit, move |tx| access::create_api_key(tx, &key)).await
    }

    async fn api_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError> {
        self.read(|conn| access::api_keys(conn)).await
    }

    async fn revoke_api_key(&self, id: String, audit: AuditEntry) -> Result<(), StoreError> {
        let now = audit.at;
        self.write_audited(audit, move |tx| access::revoke_api_key(tx, &id, now)).await
    }

    async fn use_api_key(
        &self,
        key_hash: [u8; 32],
        now: i64,
        route: String,
    ) -> Result<Option<ApiKeyAccess>, StoreError> {
        self.write(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let out = access::use_api_key(&tx, &key_hash, now, &route)?;
            tx.commit()?;
            Ok(out)
        })
        .await
    }
}

#[async_trait]
impl AuditStore for SqliteStore {
    async fn append_audit(&self, entry: AuditEntry) -> Result<(), StoreError> {
        self.write(move |conn| access::append_audit(conn, &entry)).await
    }

    async fn audit_log(&self, after: u64, limit: usize) -> Result<Vec<AuditRecord>, StoreError> {
        self.read(move |conn| access::audit_log(conn, after, limit, None)).await
    }

    async fn district_audit_log(
        &self,
        districts: Vec<posync_model::UnitId>,
        after: u64,
        limit: usize,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        self.read(move |conn| access::audit_log(conn, after, limit, Some(&districts))).await
    }
}
