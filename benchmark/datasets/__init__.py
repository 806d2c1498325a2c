"""The dataset registry, its loaders, the few-shot protocol and the synthetic paper-shapes suite."""
