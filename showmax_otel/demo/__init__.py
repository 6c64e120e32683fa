"""The demo: a Falcon catalogue API, served and measured by `showmax-otel demo`."""
