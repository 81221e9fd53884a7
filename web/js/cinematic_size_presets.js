// Cinematic: size presets on "Empty Text-to-Video Latent" (the sizes the models were trained at).
import { app } from "../../../scripts/app.js";

const PRESETS = {
  "custom": null,
  "256x256 (text-to-video-ms-1.7b)": [256, 256],
  "576x320 (zeroscope_v2 576w)": [576, 320],
  "1024x576 (zeroscope_v2 XL)": [1024, 576],
  "448x256 (potat1, wide)": [448, 256],
};

app.registerExtension({
  name: "Cinematic.SizePresets",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.name !== "CinematicEmptyVideoLatent") return;
    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const result = onNodeCreated?.apply(this, arguments);
      const width = this.widgets?.find((w) => w.name === "width");
      const height = this.widgets?.find((w) => w.name === "height");
      if (!width || !height) return result;
      const preset = this.addWidget("combo", "size preset", "custom", (value) => {
        const size = PRESETS[value];
        if (!size) return;
        width.value = size[0];
        height.value = size[1];
        this.setDirtySize?.();
        app.graph.setDirtyCanvas(true, true);
      }, { values: Object.keys(PRESETS), serialize: false });
      preset.serialize = false; // not an input of the node: saved workflows keep only width/height
      return result;
    };
  },
});
