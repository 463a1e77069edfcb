"""Face-centred analysis: find faces (`detectors`: a registry, BlazeFace by default), cut the square,
face-centred crops MFF-MoE was trained on (`crops`), and group a video's faces into persons (`tracks`)."""
