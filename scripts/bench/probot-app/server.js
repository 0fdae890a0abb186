// The baseline for scripts/bench-intake.sh: Probot's own webhook middleware verifies the
// signature and acknowledges the delivery; the app stores nothing.
import http from "node:http";
import { Probot, createNodeMiddleware } from "probot";

const probot = new Probot({
  appId: 1,
  privateKey: process.env.PRIVATE_KEY,
  secret: process.env.WEBHOOK_SECRET,
  logLevel: "warn",
});
const app = (app) => {
  app.on("issue_comment.created", async () => {});
};
const middleware = await createNodeMiddleware(app, { probot, webhooksPath: "/webhook" });
const port = Number(process.env.PORT || 3100);
http.createServer(middleware).listen(port, "127.0.0.1", () => {
  console.log(`probot listening on 127.0.0.1:${port}`);
});
