"""Generated protobuf modules (`make protos`); TF field numbers under our own package."""
