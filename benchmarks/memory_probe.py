"""Memory probes for benchmarks: bytes of tensors, the CPU allocator's timeline of a profiled step, and
which part of a model saved each tensor for backward (used by pretrain_memory.py)."""

from __future__ import annotations


def tensor_bytes(tensors) -> int:
    seen, total = set(), 0
    for tensor in tensors:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in seen:
            seen.add(storage.data_ptr())
            total += storage.nbytes()
    return total


def allocator_timeline(prof) -> tuple[int, int, str]:
    """From the allocator's events of a profiled step: the peak of the bytes allocated during the step and
    not yet freed, the same at the start of the backward pass, and the phase / operator of the peak.
    (Frees of blocks allocated before the profile are not reported, so they are never subtracted.)"""
    from torch._C._profiler import _EventType

    events, backward_start, stack = [], None, list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        event = stack.pop()
        stack.extend(event.children)
        if event.typed[0] == _EventType.Allocation and event.typed[1].device.type == "cpu":
            events.append(event)
        elif event.name == "backward":
            backward_start = event.start_time_ns
    events.sort(key=lambda e: e.start_time_ns)
    live: dict[int, int] = {}
    current = peak = at_backward = 0
    at_peak = None
    for event in events:
        size, ptr = event.typed[1].alloc_size, event.typed[1].ptr
        if size > 0:
            live[ptr] = live.get(ptr, 0) + size
            current += size
        elif ptr in live:
            current -= live.pop(ptr)
        if backward_start is not None and event.start_time_ns < backward_start:
            at_backward = current
        if current > peak:
            peak, at_peak = current, event
    names = []
    while at_peak is not None and at_peak.parent is not None:
        at_peak = at_peak.parent
        names.append(at_peak.name)
    where = [n for n in reversed(names) if n in ("forward", "backward", "optimizer")][:1]
    where += [n.replace("autograd::engine::evaluate_function: ", "") for n in names[:2]]
    return peak, at_backward, " / ".join(where)


class Components:
    """Attributes saved tensors to the innermost labelled part of the model running when they are saved:
    the model's top-level submodules (hooks on every module below them) and named model methods."""

    def __init__(self, model, methods: dict[str, str]) -> None:
        self.stack: list[str] = []
        for top, child in model.named_children():
            for module in child.modules():
                module.register_forward_pre_hook(lambda *_, name=top: self._enter(name))
                module.register_forward_hook(lambda *_: self._leave())
        for method, label in methods.items():
            if hasattr(model, method):
                setattr(model, method, self._labelled(getattr(model, method), label))

    def _enter(self, name: str) -> None:  # hooks must return None (a value would replace inputs/outputs)
        self.stack.append(name)

    def _leave(self) -> None:
        self.stack.pop()

    def _labelled(self, function, label: str):
        def wrapper(*args, **kwargs):
            self.stack.append(label)
            try:
                return function(*args, **kwargs)
            finally:
                self.stack.pop()

        return wrapper

    @property
    def current(self) -> str:
        return self.stack[-1] if self.stack else "other"
