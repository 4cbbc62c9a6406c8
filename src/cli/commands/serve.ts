/**
 * `superglobal serve --index PATH [--port 8080] [--host 127.0.0.1]`: the HTTP API and the web page
 * over one index (src/server/). Listens on loopback unless told otherwise; SIGTERM or SIGINT stop
 * it gracefully: no new connections, in-flight requests finish, then the index is closed.
 */
import type { Command } from "commander";
import { Index } from "../../app/photo-index.ts";
import { createServer, DEFAULTS } from "../../server/app.ts";
import { addAnnExpansionOption, floatOption, intOption } from "../options.ts";

interface ServeFlags {
  index: string;
  port: number;
  host: string;
  queue: number;
  maxUploadMb: number;
  maxPixels: number;
  allowIndex: boolean;
  uploadDir?: string;
  timeout: number;
  threads?: number;
  annExpansion?: number;
  log: boolean;
}

export function register(program: Command): void {
  const command = program
    .command("serve")
    .description("serve an index over HTTP: search API, thumbnails, metrics and a web page")
    .requiredOption("--index <dir>", "the index folder")
    .option("--port <n>", "TCP port (0: any free port)", intOption("--port", 0, 65535), 8080)
    .option("--host <address>", "address to listen on", "127.0.0.1")
    .option(
      "--queue <n>",
      "image searches admitted at once, running or waiting (then 503 + Retry-After)",
      intOption("--queue", 1, 10_000),
      DEFAULTS.queue,
    )
    .option(
      "--max-upload-mb <n>",
      "largest upload in MiB",
      floatOption("--max-upload-mb", 0.001, 4096),
      DEFAULTS.maxUploadMb,
    )
    .option(
      "--max-pixels <n>",
      "largest image in pixels, checked from its header before decoding",
      intOption("--max-pixels", 1, 100_000_000),
      DEFAULTS.maxPixels,
    )
    .option("--allow-index", "accept POST /index: add uploaded images to the index", false)
    .option("--upload-dir <dir>", "where POST /index saves uploads (needed with --allow-index)")
    .option(
      "--timeout <s>",
      "seconds to receive a whole request",
      intOption("--timeout", 1, 3600),
      DEFAULTS.requestTimeoutS,
    )
    .option(
      "--threads <n>",
      "onnxruntime threads (default: all cores)",
      intOption("--threads", 1, 1024),
    )
    .option("--log", "log each request on stderr (JSON lines)", false);
  addAnnExpansionOption(command);
  command.action(async (flags: ServeFlags) => {
    await runServe(flags);
  });
}

export async function runServe(flags: ServeFlags): Promise<void> {
  if (flags.allowIndex && flags.uploadDir === undefined) {
    throw new Error("--allow-index needs --upload-dir DIR (where uploaded images are saved)");
  }
  const index = await Index.open(flags.index, {
    // Read-only unless it may grow: then another process may index the same folder meanwhile.
    readOnly: !flags.allowIndex,
    ...(flags.threads === undefined ? {} : { threads: flags.threads }),
    ...(flags.annExpansion === undefined
      ? {}
      : { annParameters: { expansionSearch: flags.annExpansion } }),
  });
  let server: Awaited<ReturnType<typeof createServer>>;
  try {
    server = await createServer({
      index,
      queue: flags.queue,
      maxUploadMb: flags.maxUploadMb,
      maxPixels: flags.maxPixels,
      allowIndex: flags.allowIndex,
      ...(flags.uploadDir === undefined ? {} : { uploadDir: flags.uploadDir }),
      requestTimeoutS: flags.timeout,
      log: flags.log,
    });
  } catch (error) {
    await index.close();
    throw error;
  }
  const url = await server.listen(flags.port, flags.host).catch(async (error: unknown) => {
    await server.close();
    await index.close();
    throw error;
  });
  process.stdout.write(`superglobal: serving ${index.size} images of ${index.path} at ${url}/\n`);

  await new Promise<void>((done) => {
    let stopping = false;
    const stop = (signal: NodeJS.Signals) => {
      if (stopping) {
        process.stderr.write(`superglobal: ${signal} again: exiting now\n`);
        process.exit(1);
      }
      stopping = true;
      process.stderr.write(`superglobal: ${signal}: finishing requests in flight, then exiting\n`);
      void server
        .close()
        .then(() => index.close())
        .then(done, (error: unknown) => {
          process.stderr.write(`superglobal: while stopping: ${String(error)}\n`);
          process.exitCode = 1;
          done();
        });
    };
    process.on("SIGTERM", stop);
    process.on("SIGINT", stop);
  });
  process.stderr.write("superglobal: stopped\n");
}
