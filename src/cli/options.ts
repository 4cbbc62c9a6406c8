/** Parsers for CLI option values, each failing with a message that names the option. */
import { InvalidArgumentError } from "commander";

export function intOption(name: string, min: number, max = Number.MAX_SAFE_INTEGER) {
  return (value: string): number => {
    const n = Number(value);
    if (!/^-?\d+$/.test(value.trim()) || n < min || n > max) {
      throw new InvalidArgumentError(`${name} must be an integer between ${min} and ${max}`);
    }
    return n;
  };
}

export function floatOption(name: string, min = -Infinity, max = Infinity) {
  return (value: string): number => {
    const n = Number(value);
    if (value.trim() === "" || !Number.isFinite(n) || n < min || n > max) {
      throw new InvalidArgumentError(`${name} must be a number between ${min} and ${max}`);
    }
    return n;
  };
}

export function choiceOption<T extends number | string>(name: string, choices: readonly T[]) {
  return (value: string): T => {
    const found = choices.find((c) => String(c) === value.trim());
    if (found === undefined)
      throw new InvalidArgumentError(`${name} must be one of ${choices.join(", ")}`);
    return found;
  };
}

/** "x1,y1,x2,y2" → four finite numbers. */
export function boxOption(value: string): [number, number, number, number] {
  const parts = value.split(",").map((s) => Number(s.trim()));
  if (parts.length !== 4 || parts.some((p) => !Number.isFinite(p))) {
    throw new InvalidArgumentError("--bbox must be four numbers x1,y1,x2,y2");
  }
  return parts as [number, number, number, number];
}
