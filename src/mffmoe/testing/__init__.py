"""Test and demo support, in one place: random checkpoints in the official formats (`checkpoints`),
generated images and videos (`media`), the planted-pattern training set (`planted`), scan collections
with duplicates and broken files (`collections`), and the spec's slow reference algorithm, the ground
truth of the agreement tests and benchmarks (`reference`). Light on purpose: nothing is imported here."""
