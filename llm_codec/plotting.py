"""Pictures people would rather look at than read: spectrograms of audio side by side."""

from pathlib import Path

import numpy as np
import torch

from .extras import missing_extra


def log_spectrogram(audio: np.ndarray, n_fft: int = 512, hop: int = 128) -> np.ndarray:
    """`audio` (samples,) -> log-magnitude spectrogram in dB, (n_fft // 2 + 1, frames)."""
    signal = torch.as_tensor(np.asarray(audio, dtype=np.float32))
    if signal.numel() < n_fft:
        signal = torch.nn.functional.pad(signal, (0, n_fft - signal.numel()))
    spec = torch.stft(signal, n_fft, hop, window=torch.hann_window(n_fft), return_complex=True).abs()
    return (20 * torch.log10(spec.clamp_min(1e-5))).numpy()


def plot_spectrograms(clips: dict[str, np.ndarray], sampling_rate: int, path: str | Path, title: str | None = None) -> Path:
    """
    Writes a PNG with one spectrogram per entry of `clips` (name -> (samples,) array), stacked with a shared
    time axis and colour scale; returns the path.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # lazy: optional (the "plots" extra)
        from matplotlib.figure import Figure  # no pyplot: no global state, safe in threads and headless
    except ImportError as error:
        raise missing_extra(error, "matplotlib", "plots", "Plotting spectrograms") from None

    specs = {name: log_spectrogram(audio) for name, audio in clips.items()}
    top = max(float(s.max()) for s in specs.values())
    fig = Figure(figsize=(10, 2.6 * len(specs)))
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(specs), 1, squeeze=False, sharex=True)
    for ax, (name, spec) in zip(axes[:, 0], specs.items()):
        duration = spec.shape[1] * 128 / sampling_rate
        image = ax.imshow(
            spec, origin="lower", aspect="auto", vmin=top - 80, vmax=top,
            extent=(0, duration, 0, sampling_rate / 2000), cmap="magma",
        )
        ax.set_ylabel("kHz")
        ax.set_title(name, loc="left", fontsize=10)
    axes[-1, 0].set_xlabel("seconds")
    fig.colorbar(image, ax=axes[:, 0].tolist(), label="dB", shrink=0.8)
    if title:
        fig.suptitle(title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path
