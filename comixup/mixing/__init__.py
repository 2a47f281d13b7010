"""The mixing methods: Co-Mixup with its compiled labelling solver, Puzzle Mix, input mixup,
manifold mixup and CutMix, and the successors SaliencyMix, FMix, ResizeMix and GuidedMixup; tensors
in, mixed tensors out, on any device."""
