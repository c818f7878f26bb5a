"""Predict the micro-expression class of an onset/apex pair with an exported classifier.

python scripts/predict.py --model exports/sub01 --onset onset.jpg --apex apex.jpg [--gradcam heat.png]
python scripts/predict.py --model exports/sub01 --clip CASME2/Cropped/sub01/EP02_01f \
    --onset_frame 46 --apex_frame 59
"""

from absl import app, flags

from ma2mi_jax import cli

_MODEL = flags.DEFINE_string("model", None, "Exported classifier folder (scripts/export.py).")
_ONSET = flags.DEFINE_string("onset", None, "Onset frame image.")
_APEX = flags.DEFINE_string("apex", None, "Apex frame image.")
_CLIP = flags.DEFINE_string("clip", None, "Clip folder of numbered frames (instead of --onset/--apex).")
_ONSET_FRAME = flags.DEFINE_integer("onset_frame", None, "Onset frame number in --clip.")
_APEX_FRAME = flags.DEFINE_integer("apex_frame", None, "Apex frame number in --clip.")
_GRADCAM = flags.DEFINE_string("gradcam", None, "Write a Grad-CAM heat map over the apex frame to this PNG.")
flags.mark_flags_as_required(["model"])


def main(argv: list[str]) -> None:
    """Parse flags, predict, print the class probabilities."""
    cli.check_no_extra_args(argv)
    if _CLIP.value:
        if _ONSET_FRAME.value is None or _APEX_FRAME.value is None or _ONSET.value or _APEX.value:
            raise app.UsageError("--clip needs --onset_frame and --apex_frame (and no --onset/--apex)")
    elif not (_ONSET.value and _APEX.value):
        raise app.UsageError("give --onset and --apex images, or --clip with --onset_frame and --apex_frame")
    from ma2mi_jax.serving import classifier, model_card

    clf = classifier.load_classifier(_MODEL.value)
    if _CLIP.value:
        onset, apex = classifier.clip_frame_paths(_CLIP.value, _ONSET_FRAME.value, _APEX_FRAME.value)
    else:
        onset, apex = _ONSET.value, _APEX.value
    for line in model_card.preview(clf.card):
        print(line)
    result = clf.predict_pair(onset, apex)
    print(f"prediction: {result['class_name']}")
    for name, p in zip(clf.class_names, result["probabilities"], strict=True):
        print(f"  {name:<12} {p:.4f}")
    if _GRADCAM.value:
        from ma2mi_jax.serving import gradcam

        saved = gradcam.save_gradcam(clf, onset, apex, _GRADCAM.value, result["class_index"])
        print(f"Grad-CAM ({saved['class_name']}): {saved['path']}")


if __name__ == "__main__":
    cli.run(main)
