"""The explorer's user interface: a Gradio app over :class:`progan.explore.model.Explorer`.

Imported only by ``progan explore`` (Gradio is the optional extra ``progan[explore]``). The
page has

* a grid of samples by seed (previous/next page, "first seed" to jump to any seed; each
  image captioned with its seed), for conditional generators a class selector (default:
  balanced, seed mod number of classes) and, for snapshots taken before full growth, a depth
  selector;
* two endpoints A and B (seeds, set by typing or by clicking a sample of the grid; A may be a
  latent file written by ``progan project``) and a slider that moves between them on the
  latent hypersphere, with an optional looping animation (MP4);
* every image at the generator's full resolution (download button: a PNG of that size; the
  browser shows it enlarged with square pixels).

Every action is also an HTTP API endpoint (``/page``, ``/sample``, ``/interpolate``,
``/animate``), which is how the tests drive the app (``gradio_client``).
"""

# No `from __future__ import annotations`: Gradio reads the handler annotation gr.SelectData
# at run time to pass the clicked sample.

import tempfile
from pathlib import Path

import numpy as np
import torch

from progan.explore.model import Explorer

__all__ = ["BALANCED", "build_app"]

BALANCED = "balanced (seed mod classes)"
BUTTONS = ["download", "fullscreen"]  # the PNG at full resolution; no "share" button
# Show the small generated images enlarged with square pixels instead of blurred.
CSS = """
.pixelated img, .pixelated video { image-rendering: pixelated; }
.enlarged img { width: 100% !important; height: 100% !important; object-fit: contain; }
"""


def _hwc(image: torch.Tensor) -> np.ndarray:
    """uint8 (C, H, W) -> (H, W, 3) or (H, W) ndarray for Gradio."""
    arr = image.permute(1, 2, 0).numpy()
    return arr[:, :, 0] if arr.shape[2] == 1 else arr


def _label(choice: str | None) -> int | None:
    return None if choice in (None, "", BALANCED) else int(choice)


def _depth(value) -> int | None:
    return None if value is None or value == "" else int(value)


def build_app(explorer: Explorer, title: str = "progan explorer", page_size: int = 16):
    """A ``gradio.Blocks`` app (not started) for ``explorer``; ``page_size`` samples a page."""
    import gradio as gr

    from progan.tools.mp4 import write_mp4

    def page(first_seed, label_choice, depth):
        first = max(0, int(first_seed or 0))
        seeds, images = explorer.page(first, page_size, _label(label_choice), _depth(depth))
        return [(_hwc(img), f"seed {s}") for s, img in zip(seeds, images, strict=True)]

    def sample(seed, label_choice, depth):
        return _hwc(explorer.sample(int(seed), _label(label_choice), _depth(depth)))

    def endpoints(seed_a, seed_b, label_choice, latent_file):
        """Latents A and B and their classes (a chosen class for both, or each seed's)."""
        label_a = explorer.label_for(int(seed_a), _label(label_choice))
        label_b = explorer.label_for(int(seed_b), _label(label_choice))
        a = explorer.latent(int(seed_a))
        if latent_file:
            a, projected_label = explorer.load_projected(latent_file)
            if explorer.label_size and _label(label_choice) is None and projected_label is not None:
                label_a = projected_label
        return a, explorer.latent(int(seed_b)), label_a, label_b

    def interpolate(seed_a, seed_b, t, label_choice, depth, latent_file):
        try:
            a, b, label_a, label_b = endpoints(seed_a, seed_b, label_choice, latent_file)
            image = explorer.interpolate(a, b, float(t), label_a, _depth(depth), label_b)
            return _hwc(image)
        except (ValueError, OSError) as exc:
            raise gr.Error(str(exc)) from exc

    def image_at_a(seed_a, seed_b, _t, label_choice, depth, latent_file):
        return interpolate(seed_a, seed_b, 0.0, label_choice, depth, latent_file)

    def image_at_b(seed_a, seed_b, _t, label_choice, depth, latent_file):
        return interpolate(seed_a, seed_b, 1.0, label_choice, depth, latent_file)

    def animate(seed_a, seed_b, label_choice, depth, latent_file):
        a, b, label_a, label_b = endpoints(seed_a, seed_b, label_choice, latent_file)
        size = explorer.resolution(_depth(depth))
        factor = max(1, 256 // size)
        frames = (
            np.repeat(np.repeat(img.permute(1, 2, 0).numpy(), factor, 0), factor, 1)
            for img in explorer.animation(a, b, label_a, _depth(depth), label_b=label_b)
        )
        out = Path(tempfile.mkdtemp(prefix="progan-explore-")) / f"A{seed_a}-B{seed_b}.mp4"
        return str(write_mp4(out, frames, fps=30))

    def previous_page(first_seed):
        return max(0, int(first_seed or 0) - page_size)

    def next_page(first_seed):
        return int(first_seed or 0) + page_size

    def pick(first_seed, target, seed_a, seed_b, evt: gr.SelectData):
        seed = int(first_seed or 0) + int(evt.index)
        return (seed, seed_b) if target == "A" else (seed_a, seed)

    quiet = {"api_visibility": "private"}  # UI events that are no API endpoint
    classes = [BALANCED, *[str(c) for c in range(explorer.label_size)]]
    res = explorer.resolution()
    with gr.Blocks(title=title, analytics_enabled=False) as demo:
        gr.Markdown(
            f"## {title}\n{res}x{res} generator, latent size {explorer.latent_size}"
            + (f", {explorer.label_size} classes" if explorer.label_size else "")
        )
        with gr.Row():
            prev_btn = gr.Button("◀ previous page", scale=0)
            first_seed = gr.Number(value=0, precision=0, minimum=0, label="first seed (jump)")
            next_btn = gr.Button("next page ▶", scale=0)
            label_choice = gr.Dropdown(
                classes, value=BALANCED, label="class", visible=bool(explorer.label_size)
            )
            depth = gr.Dropdown(
                [str(d) for d in explorer.depths],
                value=str(explorer.trained_depth),
                label="depth (0 = 4x4)",
                visible=explorer.trained_depth < int(explorer.G.max_depth),
            )
        gallery = gr.Gallery(
            label="samples (click one to make it A or B)",
            columns=8,
            height="auto",
            format="png",
            allow_preview=False,
            elem_classes="pixelated",
            elem_id="samples",
        )
        with gr.Row():
            target = gr.Radio(["A", "B"], value="A", label="a click on a sample sets")
            seed_a = gr.Number(value=0, precision=0, minimum=0, label="seed A")
            seed_b = gr.Number(value=1, precision=0, minimum=0, label="seed B")
            latent_file = gr.File(
                label="A from `progan project` (NAME-latent.safetensors)",
                file_types=[".safetensors"],
                type="filepath",
            )
        t = gr.Slider(0.0, 1.0, value=0.5, step=0.01, label="A → B", elem_id="t")
        with gr.Row():
            image_a, mixed, image_b = (
                gr.Image(
                    label=label,
                    format="png",
                    elem_classes=["pixelated", "enlarged"],
                    height=256,
                    buttons=BUTTONS,
                    elem_id=elem_id,
                )
                for label, elem_id in (("A", None), ("between", "mix"), ("B", None))
            )
        animate_btn = gr.Button("animate A → B → A")
        video = gr.Video(label="animation", autoplay=True, loop=True, elem_classes="pixelated")

        view = [first_seed, label_choice, depth]
        mix_inputs = [seed_a, seed_b, t, label_choice, depth, latent_file]
        refresh_page = {"fn": page, "inputs": view, "outputs": gallery}
        demo.load(api_name="page", **refresh_page)
        for control in (first_seed, label_choice, depth):
            control.change(**quiet, **refresh_page)
        prev_btn.click(previous_page, first_seed, first_seed, **quiet)
        next_btn.click(next_page, first_seed, first_seed, **quiet)
        gallery.select(pick, [first_seed, target, seed_a, seed_b], [seed_a, seed_b], **quiet)
        t.change(interpolate, mix_inputs, mixed, api_name="interpolate")
        # API only (hidden): one seed's image, as `progan generate` makes it
        api_seed = gr.Number(visible=False, precision=0)
        api_image = gr.Image(visible=False, format="png")
        gr.Button(visible=False).click(
            sample, [api_seed, label_choice, depth], api_image, api_name="sample"
        )
        # the three images follow every change of their inputs
        for event in (demo.load, seed_a.change, seed_b.change, label_choice.change, depth.change):
            event(image_at_a, mix_inputs, image_a, **quiet)
            event(image_at_b, mix_inputs, image_b, **quiet)
            event(interpolate, mix_inputs, mixed, **quiet)
        latent_file.change(interpolate, mix_inputs, mixed, **quiet)
        animate_btn.click(animate, [seed_a, seed_b, label_choice, depth, latent_file], video,
                          api_name="animate")  # fmt: skip
    return demo


def launch(demo, host: str = "127.0.0.1", port: int | None = None, share: bool = False, **kw):
    """Start the server (blocks unless ``prevent_thread_lock=True`` is passed)."""
    return demo.launch(server_name=host, server_port=port, share=share, css=CSS, **kw)
