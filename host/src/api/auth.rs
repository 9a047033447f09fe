//! Authentication: `Authorization: Bearer <token>` decides the tenant (`Tenant`), or proves
//! the admin (`Admin`). Missing, unknown and revoked tokens are all a plain 401.
//!
//! Tokens are 32 random bytes shown once as `hat_<hex>`; only their sha256 is stored. Verified
//! tokens are cached briefly so the hot path does not ask the database on every request.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;
use uuid::Uuid;

use super::AppState;
use super::error::ApiError;
use crate::db::token::token_tenant;

/// The prefix of every tenant token.
pub const TOKEN_PREFIX: &str = "hat_";

/// Most tokens cached; the cache is emptied when it grows past this.
const MAX_CACHED: usize = 10_000;

/// A new random token and its sha256.
pub fn new_token() -> Result<(String, [u8; 32]), ApiError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| ApiError::internal("cannot draw a random token", e))?;
    let token = format!("{TOKEN_PREFIX}{}", hex::encode(bytes));
    let hash = hash_token(&token);
    Ok((token, hash))
}

/// The sha256 of a token, as stored.
pub fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Verified token hashes and their tenants.
#[derive(Debug, Default)]
pub(super) struct TokenCache(Mutex<HashMap<[u8; 32], (Uuid, Instant)>>);

impl TokenCache {
    fn get(&self, hash: &[u8; 32], ttl: std::time::Duration) -> Option<Uuid> {
        let cache = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        cache
            .get(hash)
            .filter(|(_, at)| at.elapsed() < ttl)
            .map(|(tenant, _)| *tenant)
    }

    fn put(&self, hash: [u8; 32], tenant: Uuid) {
        let mut cache = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if cache.len() >= MAX_CACHED {
            cache.clear();
        }
        cache.insert(hash, (tenant, Instant::now()));
    }

    /// Forgets a revoked token.
    pub(super) fn forget(&self, hash: &[u8]) {
        if let Ok(hash) = <[u8; 32]>::try_from(hash) {
            self.0
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .remove(&hash);
        }
    }
}

impl AppState {
    /// Forgets a revoked token on this node at once.
    pub(super) fn forget_token(&self, hash: &[u8]) {
        self.tokens.forget(hash);
    }
}

fn bearer(parts: &Parts) -> Result<&str, ApiError> {
    let header = parts.headers.get(AUTHORIZATION).ok_or_else(|| {
        ApiError::unauthorized("missing token: send `Authorization: Bearer <token>`")
    })?;
    header
        .to_str()
        .ok()
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|token| !token.is_empty())
        .ok_or_else(|| {
            ApiError::unauthorized("malformed authorization header: expected `Bearer <token>`")
        })
}

/// The tenant whose token authenticated the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tenant(pub Uuid);

impl FromRequestParts<AppState> for Tenant {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(parts)?;
        let hash = hash_token(token);
        let tenant = match state.tokens.get(&hash, state.config.token_cache_ttl) {
            Some(tenant) => tenant,
            None => {
                let mut conn = state.db.pool.acquire().await?;
                let tenant = token_tenant(&mut conn, &hash)
                    .await?
                    .ok_or_else(|| ApiError::unauthorized("invalid or revoked token"))?;
                state.tokens.put(hash, tenant);
                tenant
            }
        };
        // Every request of a tenant counts against its API rate.
        state.pace_request(tenant).await?;
        Ok(Self(tenant))
    }
}

/// A request made with the admin token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(parts)?;
        let Some(admin) = state.config.admin_token.as_deref() else {
            return Err(ApiError::unauthorized(
                "admin endpoints are disabled: start the node with HATCHERY_ADMIN_TOKEN set",
            ));
        };
        // Hashing first makes the comparison constant-time whatever the lengths.
        if bool::from(hash_token(token).ct_eq(&hash_token(admin))) {
            Ok(Self)
        } else {
            Err(ApiError::unauthorized("invalid admin token"))
        }
    }
}

/// A request made with the metrics token or the admin token: may read `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scraper;

impl FromRequestParts<AppState> for Scraper {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(parts)?;
        let config = &state.config;
        let allowed = [&config.metrics_token, &config.admin_token]
            .into_iter()
            .flatten()
            .fold(false, |found, known| {
                found | bool::from(hash_token(token).ct_eq(&hash_token(known)))
            });
        if allowed {
            Ok(Self)
        } else if config.metrics_token.is_none() && config.admin_token.is_none() {
            Err(ApiError::unauthorized(
                "metrics are disabled: start the node with HATCHERY_METRICS_TOKEN or HATCHERY_ADMIN_TOKEN set",
            ))
        } else {
            Err(ApiError::unauthorized("invalid metrics token"))
        }
    }
}
