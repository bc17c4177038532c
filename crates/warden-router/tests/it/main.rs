mod privacy;
mod routing;
mod streaming;
mod support;
mod translate;
