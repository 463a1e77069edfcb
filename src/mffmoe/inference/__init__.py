"""The inference core: `detector` (Detector: orchestration), `assemble` (results from scores, shared with
scans), `batching` (batch scoring), `pooling` (frame scores -> a video's score) and `host` (the host's
`MFFMoEDetectorV1` adapter). Nothing is imported here, so `mffmoe.pooling` stays light."""
