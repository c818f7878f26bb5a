"""Predict the micro-expression class of a clip, or of an onset/apex pair, with an exported classifier.

python scripts/predict.py --model exports/sub01 --clip me.mp4             # face cropped, apex found
python scripts/predict.py --model exports/sub01 --clip CASME2/Cropped/sub01/EP02_01f \
    --onset_frame 46 --apex_frame 59
python scripts/predict.py --model exports/sub01 --onset onset.jpg --apex apex.jpg [--gradcam heat.png]

A clip is a folder of numbered frames or a video file. The onset is its first frame unless
--onset_frame names one; the apex, unless --apex_frame names one, is the later frame whose
normalise(frame) - normalise(onset) (registered when the model registers its pairs) has the largest
mean absolute value (ma2mi_jax/serving/clip_input.py). --face_crop=auto crops the face of a video
and leaves a frame folder whole (the micro-expression sets ship their frames cropped). Clip mode
always writes the Grad-CAM picture, by default to <clip name>_gradcam.png in the current folder.
"""

from absl import app, flags

from ma2mi_jax import cli

_MODEL = flags.DEFINE_string("model", None, "Exported classifier folder (scripts/export.py).")
_ONSET = flags.DEFINE_string("onset", None, "Onset frame image (with --apex, instead of --clip).")
_APEX = flags.DEFINE_string("apex", None, "Apex frame image (with --onset, instead of --clip).")
_CLIP = flags.DEFINE_string("clip", None, "Clip: a folder of numbered frames, or a video file (.mp4, .avi).")
_ONSET_FRAME = flags.DEFINE_integer(
    "onset_frame", None, "Onset in --clip: frame number (folder) or frame index from 0 (video). "
    "Default: the first frame."
)  # fmt: skip
_APEX_FRAME = flags.DEFINE_integer(
    "apex_frame", None, "Apex in --clip, numbered as --onset_frame. Default: found (the frame after the "
    "onset with the most motion as the model sees it)."
)  # fmt: skip
_FACE_CROP = flags.DEFINE_enum(
    "face_crop", "auto", ["auto", "on", "off"], "Crop the face of --clip as for AFEW: auto = a video yes, "
    "a frame folder no (already cropped, as CASME II's Cropped/)."
)  # fmt: skip
_GRADCAM = flags.DEFINE_string(
    "gradcam", None, "Write the Grad-CAM heat map over the apex frame to this PNG "
    "(--clip: by default <clip name>_gradcam.png in the current folder)."
)  # fmt: skip
flags.mark_flags_as_required(["model"])


def _check_flags() -> None:
    """One usage error for flags that do not go together."""
    if _ONSET.value or _APEX.value:
        if not (_ONSET.value and _APEX.value) or _CLIP.value:
            raise app.UsageError("give --onset and --apex images together, or --clip instead of both")
        if _ONSET_FRAME.value is not None or _APEX_FRAME.value is not None or _FACE_CROP.value != "auto":
            raise app.UsageError("--onset_frame, --apex_frame and --face_crop go with --clip, not images")
    elif not _CLIP.value:
        raise app.UsageError("give --clip (a folder of numbered frames or a video), or --onset and --apex")
    if _GRADCAM.value and not _GRADCAM.value.lower().endswith(".png"):
        raise app.UsageError(f"--gradcam {_GRADCAM.value}: the heat map is written as PNG; give a .png path")


def main(argv: list[str]) -> None:
    """Parse flags, predict, print the class probabilities and the frames used, draw Grad-CAM."""
    cli.check_no_extra_args(argv)
    _check_flags()
    from ma2mi_jax.serving import classifier, clip_input, gradcam, model_card

    clf = classifier.load_classifier(_MODEL.value)
    for line in model_card.preview(clf.card):
        print(line)
    if _CLIP.value:
        result = clf.predict_clip(
            _CLIP.value, _ONSET_FRAME.value, _APEX_FRAME.value, face_crop=_FACE_CROP.value
        )
        for line in result["pair"].lines():
            print(line)
        onset, apex = result["pair"].onset, result["pair"].apex
        heat_path = _GRADCAM.value or clip_input.default_gradcam_path(_CLIP.value)
    else:
        onset, apex = _ONSET.value, _APEX.value
        result = clf.predict_pair(onset, apex)
        heat_path = _GRADCAM.value
    print(f"prediction: {result['class_name']}")
    for name, p in zip(clf.class_names, result["probabilities"], strict=True):
        print(f"  {name:<12} {p:.4f}")
    if heat_path:
        saved = gradcam.save_gradcam(clf, onset, apex, heat_path, result["class_index"])
        print(f"Grad-CAM ({saved['class_name']}): {saved['path']}")


if __name__ == "__main__":
    cli.run(main)
