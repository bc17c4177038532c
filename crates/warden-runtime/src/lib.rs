//! warden-runtime
