//! The web app's static files, compiled into the binary.

use super::*;

/// The puskesmas web app: plain files compiled into the binary (no build step, nothing
/// fetched at run time), ES modules under one CSP. It signs in with an enrolment code like a
/// phone does.
const APP_FILES: [(&str, &str, &str); 11] = [
    ("index.html", include_str!("../../assets/app/index.html"), "text/html; charset=utf-8"),
    ("app.css", include_str!("../../assets/app/app.css"), "text/css; charset=utf-8"),
    ("main.js", include_str!("../../assets/app/main.js"), "text/javascript; charset=utf-8"),
    ("api.js", include_str!("../../assets/app/api.js"), "text/javascript; charset=utf-8"),
    ("i18n.js", include_str!("../../assets/app/i18n.js"), "text/javascript; charset=utf-8"),
    ("dom.js", include_str!("../../assets/app/dom.js"), "text/javascript; charset=utf-8"),
    ("conflicts.js", include_str!("../../assets/app/conflicts.js"), "text/javascript; charset=utf-8"),
    ("child.js", include_str!("../../assets/app/child.js"), "text/javascript; charset=utf-8"),
    ("duplicates.js", include_str!("../../assets/app/duplicates.js"), "text/javascript; charset=utf-8"),
    ("overdue.js", include_str!("../../assets/app/overdue.js"), "text/javascript; charset=utf-8"),
    ("month.js", include_str!("../../assets/app/month.js"), "text/javascript; charset=utf-8"),
];

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

/// `/admin`: the app's page.
pub(super) async fn admin_page() -> Response {
    app_file(Path("index.html".to_owned())).await
}

/// `/admin/{file}`: one of the app's files; anything else is 404.
pub(super) async fn app_file(Path(name): Path<String>) -> Response {
    match APP_FILES.iter().find(|(n, _, _)| *n == name) {
        Some((_, body, content_type)) => admin_asset(body, content_type),
        None => ApiError::new(ErrorCode::NotFound, "no such file").into_response(),
    }
}

// ---- semantic duplicates ----
