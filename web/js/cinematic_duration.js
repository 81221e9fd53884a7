// Cinematic: show the clip's length (frames / fps) on "Save Video (Cinematic)" after it runs.
import { app } from "../../../scripts/app.js";

app.registerExtension({
  name: "Cinematic.ClipDuration",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.name !== "CinematicSaveVideo") return;
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      const result = onExecuted?.apply(this, arguments);
      const info = message?.cinematic_info?.[0];
      if (!info) return result;
      let widget = this.widgets?.find((w) => w.name === "clip");
      if (!widget) {
        widget = this.addWidget("text", "clip", "", () => {}, { serialize: false });
        widget.serialize = false; // display only: never saved into the workflow
      }
      widget.value = info;
      app.graph.setDirtyCanvas(true, false);
      return result;
    };
  },
});
