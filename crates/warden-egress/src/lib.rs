//! warden-egress
