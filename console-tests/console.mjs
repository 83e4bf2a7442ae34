// Drives the distcron console in headless Debian Chromium against a live stack.
// Environment: CONSOLE_URL (gateway), CONSOLE_TOKEN (an admin token), SHOTS_DIR (screenshots).
// Expects a job "xss" whose command is markup, and a live worker. Exits non-zero on failure.
import { chromium } from "playwright-core";

const url = process.env.CONSOLE_URL;
const token = process.env.CONSOLE_TOKEN;
const shots = process.env.SHOTS_DIR;
if (!url || !token || !shots) throw new Error("CONSOLE_URL, CONSOLE_TOKEN and SHOTS_DIR are required");

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-quic",
    "--no-first-run", "--disable-component-update", "--disable-sync"],
});
const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
page.setDefaultTimeout(15000);
const alerts = [];
const pageErrors = [];
page.on("dialog", async (dialog) => {
  if (dialog.type() === "confirm") return dialog.accept();
  alerts.push(dialog.message());
  return dialog.dismiss();
});
page.on("pageerror", (e) => pageErrors.push(String(e)));

function check(condition, message) {
  if (!condition) throw new Error(message);
}

async function shot(name) {
  await page.screenshot({ path: `${shots}/${name}.png`, fullPage: true });
}

async function step(name, body) {
  try {
    await body();
    console.log(`ok: ${name}`);
  } catch (e) {
    await shot(`FAILED-${name}`).catch(() => {});
    console.error(`FAILED: ${name}: ${e.stack || e}`);
    await browser.close();
    process.exit(1);
  }
}

await step("login", async () => {
  await page.goto(`${url}/`);
  await page.fill("#token", "not-a-token");
  await page.click("button[type=submit]");
  await page.waitForSelector("#token-error:has-text('Unknown token')");
  await shot("login");
  await page.fill("#token", token);
  await page.click("button[type=submit]");
  await page.waitForSelector("table#jobs");
  check((await page.textContent("#who")).includes("(admin)"), "the role is shown");
});

await step("user data is text, never markup", async () => {
  const cell = page.locator('tr[data-job="xss"] code').first();
  await cell.waitFor();
  check((await cell.textContent()) === "<img src=x onerror=alert(1)>", "the command shows as typed");
  check((await page.locator('tr[data-job="xss"] img').count()) === 0, "no element was created from it");
  await shot("jobs");
});

await step("editor validates as you type", async () => {
  await page.click("#new-job");
  await page.fill("#name", "console-job");
  await page.fill("#command", "for i in $(seq 1 30); do echo tick $i; sleep 1; done");
  await page.fill("#cronExpr", "61 * * * * *");
  await page.waitForSelector("#cronExpr-error:not(:empty)");
  await shot("editor-invalid");
  await page.fill("#cronExpr", "0 30 9 * * MON-FRI");
  await page.fill("#timeZone", "Europe/Berlin");
  await page.waitForFunction(() => document.querySelectorAll("#fires li.fire").length === 5);
  check((await page.textContent("#cronExpr-error")) === "", "the error went away");
  await shot("editor-valid");
  await page.click("#save");
  await page.waitForSelector('tr[data-job="console-job"]');
});

await step("a run appears and its output streams live", async () => {
  await page.click('tr[data-job="console-job"] button:has-text("Run now")');
  await page.goto(`${url}/#/jobs/console-job/runs`);
  for (let i = 0; i < 40 && (await page.locator("tr[data-run]").count()) === 0; i++) {
    await page.waitForTimeout(250);
    await page.click('button:has-text("Refresh")');
  }
  await page.waitForSelector("tr[data-run]");
  await shot("runs");
  await page.click("tr[data-run] a");
  await page.waitForSelector("#run-status .status.running");
  await page.waitForFunction(() => document.getElementById("output").textContent.includes("tick 3"), null, { timeout: 20000 });
  const traceId = await page.textContent("#trace-id");
  if (!/^[0-9a-f]{32}$/.test(traceId)) throw new Error(`run page shows trace id ${JSON.stringify(traceId)}`);
  await shot("output-live");
});

await step("kill ends the run as killed", async () => {
  await page.click("#kill-run");
  await page.waitForSelector("#run-status .status.killed", { timeout: 20000 });
  await page.waitForFunction(() => document.getElementById("output").textContent.includes("tick 1"));
  await shot("output-killed");
});

await step("workers are listed", async () => {
  await page.goto(`${url}/#/workers`);
  await page.waitForSelector("tr[data-worker]");
  await shot("workers");
});

await step("usable at phone width", async () => {
  await page.setViewportSize({ width: 390, height: 844 });
  await page.goto(`${url}/#/jobs`);
  await page.waitForSelector('tr[data-job="console-job"]');
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  check(overflow <= 1, `the page is ${overflow}px wider than the screen`);
  await shot("jobs-phone");
});

await step("a secret's value is taken but never shown again", async () => {
  await page.setViewportSize({ width: 1280, height: 800 });
  await page.goto(`${url}/#/jobs/console-job/edit`);
  await page.waitForSelector("#secretEnv");
  await page.fill("#secretEnv", "API_KEY=s3cr3t-console-value");
  await page.click("#save");
  await page.waitForSelector('tr[data-job="console-job"]');
  await page.goto(`${url}/#/jobs/console-job/edit`);
  await page.waitForSelector("#secretEnv-set:has-text('Set: API_KEY')");
  check((await page.inputValue("#secretEnv")) === "API_KEY", "the stored secret shows as its name alone");
  check(!(await page.content()).includes("s3cr3t-console-value"), "the value is nowhere in the page");
  await shot("editor-secret");
});

await step("the session cookie is an id, and logging out revokes it", async () => {
  const cookies = await page.context().cookies();
  const session = cookies.find((c) => c.name === "distcron_session");
  check(session, `a session cookie is set (${cookies.map((c) => c.name).join(", ")})`);
  check(session.httpOnly && session.sameSite === "Strict", "HttpOnly, SameSite=Strict");
  check(!session.value.includes(token) && session.value !== token, "the cookie does not hold the token");
  const asCookie = { headers: { cookie: `distcron_session=${session.value}` } };
  check((await page.request.get(`${url}/api/v1/jobs`, asCookie)).status() === 200, "the cookie works while logged in");
  await page.click("#logout");
  await page.waitForSelector("#token");
  check((await page.request.get(`${url}/api/v1/jobs`, asCookie)).status() === 401, "the old cookie is refused after logout");
});

await step("no script ran from user data, no page errors", async () => {
  check(alerts.length === 0, `dialogs opened: ${alerts.join(", ")}`);
  check(pageErrors.length === 0, `page errors: ${pageErrors.join("; ")}`);
});

await browser.close();
