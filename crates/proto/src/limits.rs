/// Bounds on what one sync may carry. The server enforces them; the client packs within them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Request body on the wire (compressed, if it is).
    pub body_bytes_max: usize,
    /// Request body after decompression: a gzip bomb stops here.
    pub body_decoded_bytes_max: usize,
    /// Documents pushed in one request.
    pub push_docs_max: usize,
    /// Pulled page, summed over the documents' change bytes. A single document larger than
    /// this is still sent alone, so a page is at most this plus one document.
    pub page_bytes_max: usize,
    /// Documents in one pulled page.
    pub page_docs_max: usize,
    /// Syncs the server works on at once; one more is answered `503 overloaded` with
    /// `Retry-After` at once instead of queueing (a phone retries later with jitter).
    pub syncs_in_flight_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            body_bytes_max: 8 * 1024 * 1024,
            body_decoded_bytes_max: 16 * 1024 * 1024,
            push_docs_max: 256,
            page_bytes_max: 1024 * 1024,
            page_docs_max: 500,
            syncs_in_flight_max: 256,
        }
    }
}
