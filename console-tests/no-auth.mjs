// Opens the distcron console of a stack without tokens (loopback only): no login, and it says so.
// Environment: CONSOLE_URL (gateway), SHOTS_DIR (screenshots). Exits non-zero on failure.
import { chromium } from "playwright-core";

const url = process.env.CONSOLE_URL;
const shots = process.env.SHOTS_DIR;
if (!url || !shots) throw new Error("CONSOLE_URL and SHOTS_DIR are required");

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-quic",
    "--no-first-run", "--disable-component-update", "--disable-sync"],
});
const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
page.setDefaultTimeout(15000);
try {
  await page.goto(`${url}/`);
  await page.waitForSelector("table#jobs");
  if (await page.locator("#token").count()) throw new Error("a login form is shown");
  const who = await page.textContent("#who");
  if (!who.includes("no authentication (loopback only)")) throw new Error(`#who says ${who}`);
  if (await page.isVisible("#logout")) throw new Error("a logout button is shown");
  // Even the login page, asked for directly, goes to the jobs.
  await page.goto(`${url}/#/login`);
  await page.reload();
  await page.waitForSelector("table#jobs");
  await page.screenshot({ path: `${shots}/no-auth.png`, fullPage: true });
  console.log("ok: the console opens without a login and says there is no authentication");
} catch (e) {
  await page.screenshot({ path: `${shots}/FAILED-no-auth.png`, fullPage: true }).catch(() => {});
  console.error(`FAILED: ${e.stack || e}`);
  await browser.close();
  process.exit(1);
}
await browser.close();
