//! Administration on PostgreSQL: the hierarchy, users, devices, enrolments, PINs, API keys
//! and the audit trail, each write audited in its own transaction (rows in `access`).

use super::{PgStore, access};
use crate::{
    AccessStore, ApiKeyAccess, ApiKeyRecord, AuditAction, AuditEntry, AuditRecord, AuditStore, DeviceAccess,
    DeviceRecord, ImportReport, NewApiKey, NewCredential, NewEnrolment, PinAttempt, PinLockout, PinRecord, StoreError,
    UnitTree, UserRecord,
};
use async_trait::async_trait;
use posync_model::{DeviceId, HierarchyFile, Unit, UserId, UserSpec};

#[async_trait]
impl AccessStore for PgStore {
    async fn import_hierarchy(&self, file: HierarchyFile, audit: AuditEntry) -> Result<ImportReport, StoreError> {
        let now = audit.at;
        audited!(self, audit, |tx| access::import(&tx, &file, now).await?)
    }

    async fn unit_tree(&self) -> Result<UnitTree, StoreError> {
        reading!(self, |tx| access::unit_tree(&tx).await?)
    }

    async fn save_unit(&self, unit: Unit, audit: AuditEntry) -> Result<(), StoreError> {
        audited!(self, audit, |tx| access::put_unit(&tx, &unit).await?)
    }

    async fn save_user(&self, user: UserSpec, audit: AuditEntry) -> Result<(), StoreError> {
        let now = audit.at;
        audited!(self, audit, |tx| access::put_user(&tx, &user, now).await?)
    }

    async fn user(&self, user: UserId) -> Result<Option<UserRecord>, StoreError> {
        reading!(self, |tx| access::user(&tx, &user).await?)
    }

    async fn users(&self) -> Result<Vec<UserRecord>, StoreError> {
        reading!(self, |tx| access::users(&tx).await?)
    }

    async fn issue_enrolment(&self, enrolment: NewEnrolment, audit: AuditEntry) -> Result<(), StoreError> {
        let now = audit.at;
        audited!(self, audit, |tx| access::issue_enrolment(&tx, &enrolment, now).await?)
    }

    async fn redeem_enrolment(
        &self,
        code_hash: [u8; 32],
        credential: NewCredential,
        now: i64,
    ) -> Result<UserRecord, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // `redeem_enrolment` locks the code's row: two instances redeeming one code at once
        // cannot both win.
        let user = access::redeem_enrolment(&tx, &code_hash, &credential, now).await?;
        let actor = crate::Actor::Device { device: credential.device };
        let detail = serde_json::json!({ "user": user.id, "label": credential.label });
        access::append_audit(
            &tx,
            &AuditEntry::new(now, &actor, AuditAction::DeviceEnrolled, credential.device, detail)
                .concerning(user.units.first()),
        )
        .await?;
        tx.commit().await?;
        Ok(user)
    }

    async fn refresh_device(
        &self,
        device: DeviceId,
        refresh_hash: [u8; 32],
        new_expires_at: i64,
        now: i64,
    ) -> Result<UserRecord, StoreError> {
        let slid = async {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            // A refused refresh changes nothing; dropping the transaction rolls it back.
            let user = access::refresh_device(&tx, device, &refresh_hash, new_expires_at, now).await?;
            tx.commit().await?;
            Ok::<_, StoreError>(user)
        };
        match slid.await {
            // A full disk must not lock every device out: check the credential without
            // sliding its expiry.
            Err(StoreError::StorageFull(reason)) => {
                tracing::warn!(%reason, "refresh expiry not slid: storage full");
                reading!(self, |tx| access::verify_refresh(&tx, device, &refresh_hash, now, false).await?)
            }
            other => other,
        }
    }

    async fn revoke_device(&self, device: DeviceId, audit: AuditEntry) -> Result<(), StoreError> {
        let now = audit.at;
        audited!(self, audit, |tx| access::revoke_device(&tx, device, now).await?)
    }

    async fn devices(&self) -> Result<Vec<DeviceRecord>, StoreError> {
        reading!(self, |tx| access::devices(&tx).await?)
    }

    async fn device_access(&self, device: DeviceId) -> Result<Option<DeviceAccess>, StoreError> {
        // One snapshot: the user, the device's state and the scope agree with each other.
        reading!(self, |tx| access::device_access(&tx, device).await?)
    }

    async fn set_pin(&self, user: UserId, pin_hash: String, audit: AuditEntry) -> Result<(), StoreError> {
        let now = audit.at;
        audited!(self, audit, |tx| access::set_pin(&tx, &user, &pin_hash, now).await?)
    }

    async fn pin_of(&self, user: UserId) -> Result<Option<PinRecord>, StoreError> {
        reading!(self, |tx| access::pin_of(&tx, &user).await?)
    }

    async fn pin_attempt(&self, user: UserId, now: i64, lockout: PinLockout) -> Result<PinAttempt, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let attempt = access::pin_attempt(&tx, &user, now, lockout).await?;
        tx.commit().await?;
        Ok(attempt)
    }

    async fn pin_succeeded(
        &self,
        user: UserId,
        pin_hash: String,
        credential: NewCredential,
        now: i64,
    ) -> Result<UserRecord, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let record = access::pin_succeeded(&tx, &user, &pin_hash, &credential, now).await?;
        access::append_audit(&tx, &crate::access::signed_in_audit(&record, &credential, now)).await?;
        tx.commit().await?;
        Ok(record)
    }

    async fn create_api_key(&self, key: NewApiKey, audit: AuditEntry) -> Result<(), StoreError> {
        audited!(self, audit, |tx| access::create_api_key(&tx, &key).await?)
    }

    async fn api_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError> {
        reading!(self, |tx| access::api_keys(&tx).await?)
    }

    async fn revoke_api_key(&self, id: String, audit: AuditEntry) -> Result<(), StoreError> {
        let now = audit.at;
        audited!(self, audit, |tx| access::revoke_api_key(&tx, &id, now).await?)
    }

    async fn use_api_key(
        &self,
        key_hash: [u8; 32],
        now: i64,
        route: String,
    ) -> Result<Option<ApiKeyAccess>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let out = access::use_api_key(&tx, &key_hash, now, &route).await?;
        tx.commit().await?;
        Ok(out)
    }
}

#[async_trait]
impl AuditStore for PgStore {
    async fn append_audit(&self, entry: AuditEntry) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        access::append_audit(&tx, &entry).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn audit_log(&self, after: u64, limit: usize) -> Result<Vec<AuditRecord>, StoreError> {
        reading!(self, |tx| access::audit_log(&tx, after, limit, None).await?)
    }

    async fn district_audit_log(
        &self,
        districts: Vec<posync_model::UnitId>,
        after: u64,
        limit: usize,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        reading!(self, |tx| access::audit_log(&tx, after, limit, Some(&districts)).await?)
    }
}
