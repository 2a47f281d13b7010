"""The mixing methods: Co-Mixup with its compiled labelling solver, Puzzle Mix, input mixup,
manifold mixup and CutMix; tensors in, mixed tensors out, on any device."""
