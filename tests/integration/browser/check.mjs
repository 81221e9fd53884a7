// Headless Chromium on the ComfyUI page (loopback only): every example workflow loads with no missing node, and
// text_to_video queued on the tiny model shows its video preview. Prints one JSON line; screenshots go to SHOTS_DIR.
//   COMFY_URL=http://127.0.0.1:PORT WORKFLOWS_DIR=... SHOTS_DIR=... PLAYWRIGHT_DIR=<folder with node_modules/playwright-core> node check.mjs
import { createRequire } from "node:module";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

const require = createRequire(path.join(process.env.PLAYWRIGHT_DIR, "package.json"));
const { chromium } = require("playwright-core");
const shots = process.env.SHOTS_DIR;
const wfDir = process.env.WORKFLOWS_DIR;

const context = await chromium.launchPersistentContext(fs.mkdtempSync(path.join(os.tmpdir(), "cinematic-chrome-")), {
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  viewport: { width: 1600, height: 1000 },
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"],
});
const page = context.pages()[0] || (await context.newPage());
const errors = [];
page.on("pageerror", (e) => errors.push(String(e)));
await page.goto(process.env.COMFY_URL);
await page.waitForFunction(() => window.app?.graph && window.LiteGraph, null, { timeout: 90000 });
await page.waitForTimeout(2000);
// A fresh user gets the template browser first: close it so the screenshots show the graph.
async function closeDialogs() {
  for (let i = 0; i < 3; i++) {
    const close = page.locator(".p-dialog-close-button, button[aria-label='Close']").first();
    if (await close.count() && await close.isVisible()) await close.click().catch(() => {});
    await page.keyboard.press("Escape");
    await page.waitForTimeout(300);
  }
}
await closeDialogs();

const result = { workflows: {}, errors };
result.frontend_version = await page.evaluate(() => window.__COMFYUI_FRONTEND_VERSION__ || null);
for (const file of fs.readdirSync(wfDir).filter((f) => f.endsWith(".json")).sort()) {
  const wf = JSON.parse(fs.readFileSync(path.join(wfDir, file), "utf8"));
  result.workflows[file] = await page.evaluate(async (wf) => {
    await window.app.loadGraphData(wf);
    const missing = wf.nodes.map((n) => n.type).filter((t) => !window.LiteGraph.registered_node_types[t]);
    return { missing, loaded: window.app.graph._nodes.length };
  }, wf);
  await closeDialogs();
  await page.screenshot({ path: path.join(shots, file.replace(".json", ".png")) });
}

const wf = JSON.parse(fs.readFileSync(path.join(wfDir, "text_to_video.json"), "utf8"));
for (const n of wf.nodes) {
  if (n.type === "CinematicEmptyVideoLatent") n.widgets_values = [64, 64, 3, 1];
  if (n.type === "CinematicSampler") n.widgets_values[2] = 3;
}
await page.evaluate(async (wf) => {
  await window.app.loadGraphData(wf);
  await window.app.queuePrompt(0, 1);
}, wf);
const video = await page.waitForSelector("video", { timeout: 180000 });
await page.waitForTimeout(2000);
await closeDialogs();
result.video_src = await video.evaluate((v) => v.currentSrc || v.src || v.querySelector("source")?.src || "");
result.video_ready = await video.evaluate((v) => v.readyState);
await page.screenshot({ path: path.join(shots, "text_to_video_queued.png") });
console.log(JSON.stringify(result));
await context.close();
