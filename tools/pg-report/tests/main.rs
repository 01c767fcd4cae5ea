//! pg-report's tests, as processes (one binary; one module per concern).
