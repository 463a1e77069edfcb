"""Evaluation on labelled data through the inference `Detector`: scores (`evaluate`), the field's metrics
(`metrics`) and plots (`plots`)."""
