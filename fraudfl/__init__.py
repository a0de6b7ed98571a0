"""fraudfl: federated fraud detection."""
