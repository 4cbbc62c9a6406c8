/**
 * Reads the value a bundled (browserify-style, minified) JS module exports, without running it.
 * nsfwjs ships its tfjs model as such modules: `…{1:[function(t,e,a){e.exports=<literal>},{}]}…`,
 * where <literal> is the model JSON written as a JS object literal (unquoted keys, `.5`, `!0`) or,
 * for a weight shard, one base64 string. We parse that literal with a small strict parser: no
 * `eval`, no `vm`, nothing from the package is executed.
 */
import { badFile } from "../../errors.ts";

/** `{1:[function(a,b,c){b.exports=` — the module body of a one-module browserify bundle. */
const EXPORTS_START = /\{1:\[function\(([\w$]+),([\w$]+),([\w$]+)\)\{\2\.exports=/;

/**
 * The literal assigned to `module.exports` in a bundled module's text. `file` names the file in
 * errors (BAD_FILE when the text is not such a module or the literal is malformed).
 */
export function readModuleExports(text: string, file: string): unknown {
  const match = EXPORTS_START.exec(text);
  if (match === null) {
    throw badFile(file, "not a bundled JS module with a `module.exports=` literal");
  }
  const parser = new LiteralParser(text, match.index + match[0].length, file);
  const value = parser.value();
  parser.expect("}");
  return value;
}

const NUMBER = /-?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?/y;
const IDENTIFIER = /[A-Za-z_$][\w$]*/y;

/** A JS literal: objects, arrays, double-quoted strings, numbers, true/false/null, `!0`/`!1`. */
class LiteralParser {
  constructor(
    private readonly text: string,
    private pos: number,
    private readonly file: string,
  ) {}

  value(): unknown {
    this.skipSpace();
    const c = this.text[this.pos];
    if (c === "{") return this.object();
    if (c === "[") return this.array();
    if (c === '"') return this.string();
    if (c === "!" && (this.text[this.pos + 1] === "0" || this.text[this.pos + 1] === "1")) {
      this.pos += 2;
      return this.text[this.pos - 1] === "0";
    }
    for (const [word, value] of [
      ["true", true],
      ["false", false],
      ["null", null],
    ] as const) {
      if (this.text.startsWith(word, this.pos)) {
        this.pos += word.length;
        return value;
      }
    }
    NUMBER.lastIndex = this.pos;
    const number = NUMBER.exec(this.text);
    if (number !== null) {
      this.pos = NUMBER.lastIndex;
      return Number(number[0]);
    }
    return this.fail("a value");
  }

  expect(c: string): void {
    this.skipSpace();
    if (this.text[this.pos] !== c) this.fail(`'${c}'`);
    this.pos += 1;
  }

  private object(): Record<string, unknown> {
    this.pos += 1; // {
    const out: Record<string, unknown> = {};
    this.skipSpace();
    if (this.text[this.pos] === "}") {
      this.pos += 1;
      return out;
    }
    for (;;) {
      const key = this.key();
      if (key === "__proto__" || Object.hasOwn(out, key)) this.fail(`a new key (got "${key}")`);
      this.expect(":");
      out[key] = this.value();
      this.skipSpace();
      const c = this.text[this.pos];
      this.pos += 1;
      if (c === "}") return out;
      if (c !== ",") {
        this.pos -= 1;
        this.fail("',' or '}'");
      }
    }
  }

  private key(): string {
    this.skipSpace();
    if (this.text[this.pos] === '"') return this.string();
    IDENTIFIER.lastIndex = this.pos;
    const id = IDENTIFIER.exec(this.text);
    if (id !== null) {
      this.pos = IDENTIFIER.lastIndex;
      return id[0];
    }
    NUMBER.lastIndex = this.pos;
    const number = NUMBER.exec(this.text);
    if (number !== null) {
      this.pos = NUMBER.lastIndex;
      return String(Number(number[0]));
    }
    return this.fail("an object key");
  }

  private array(): unknown[] {
    this.pos += 1; // [
    const out: unknown[] = [];
    this.skipSpace();
    if (this.text[this.pos] === "]") {
      this.pos += 1;
      return out;
    }
    for (;;) {
      out.push(this.value());
      this.skipSpace();
      const c = this.text[this.pos];
      this.pos += 1;
      if (c === "]") return out;
      if (c !== ",") {
        this.pos -= 1;
        this.fail("',' or ']'");
      }
    }
  }

  /** A double-quoted string; escapes are decoded as JSON's (a superset would be refused). */
  private string(): string {
    const start = this.pos;
    let end = start + 1;
    let escaped = false;
    for (;;) {
      end = this.text.indexOf('"', end);
      if (end < 0) this.fail("a closing '\"'");
      let backslashes = 0;
      while (this.text[end - 1 - backslashes] === "\\") backslashes += 1;
      if (backslashes % 2 === 0) break;
      escaped = true;
      end += 1;
    }
    this.pos = end + 1;
    const raw = this.text.slice(start + 1, end);
    if (!escaped && !raw.includes("\\")) return raw;
    try {
      return JSON.parse(this.text.slice(start, end + 1)) as string;
    } catch {
      this.pos = start;
      return this.fail("a string with JSON escapes");
    }
  }

  private skipSpace(): void {
    while (/\s/.test(this.text[this.pos] ?? "")) this.pos += 1;
  }

  private fail(expected: string): never {
    const near = JSON.stringify(this.text.slice(this.pos, this.pos + 20));
    throw badFile(
      this.file,
      `malformed module literal: expected ${expected} at ${this.pos}, near ${near}`,
    );
  }
}
