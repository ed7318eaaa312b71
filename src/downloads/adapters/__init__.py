"""What talks to the outside for the application: the policy file, Prometheus metrics."""
