//! The web app's static files, compiled into the binary.

use super::*;

/// The conflict admin page: one self-contained file compiled into the binary (no build step,
/// no assets fetched at run time). It signs in with an enrolment code like a phone does.
pub(super) const ADMIN_PAGE: &str = include_str!("../../assets/admin.html");
pub(super) const ADMIN_SCRIPT: &str = include_str!("../../assets/admin.js");
pub(super) const ADMIN_STYLE: &str = include_str!("../../assets/admin.css");

/// Scripts and styles only from this server's own files: no inline code, so an injected
/// value can never run.
pub(super) const ADMIN_CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

pub(super) fn admin_asset(body: &'static str, content_type: &'static str) -> Response {
    let mut r = (StatusCode::OK, body).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(ADMIN_CSP));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

pub(super) async fn admin_page() -> Response {
    admin_asset(ADMIN_PAGE, "text/html; charset=utf-8")
}

pub(super) async fn admin_script() -> Response {
    admin_asset(ADMIN_SCRIPT, "text/javascript; charset=utf-8")
}

pub(super) async fn admin_style() -> Response {
    admin_asset(ADMIN_STYLE, "text/css; charset=utf-8")
}

// ---- semantic duplicates ----
