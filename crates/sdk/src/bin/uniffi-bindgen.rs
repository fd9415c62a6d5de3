//! Generates the Kotlin, Swift and Python bindings of the SDK from the built library.
fn main() {
    uniffi::uniffi_bindgen_main()
}
