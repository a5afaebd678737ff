// The command line's flags of the run options, derived from their table (src/train/options.ts):
// one flag per option, its help, range and default from the table, its value parsed and checked
// by the table's parser. A command reads back a run specification of the flags the user gave.

import { InvalidArgumentError, type Command } from 'commander';
import { ConfigError, flagOf, parseOption, requirementOf, RUN_OPTIONS, type OptionName, type RunSpec } from '../src/train/options.js';

/**
 * What a command may change about an option's flag: its default and help (`mobilenet summary`'s
 * alpha is 1). A `default` given as undefined means none: the flag is not set unless given
 * (`import` reads what is not given from the weights file).
 */
export interface FlagOverrides {
  default?: unknown;
  help?: string;
}

/** The help of an option's flag: its choices or range, then the table's text. */
function helpOf(option: OptionName, help: string): string {
  const o = RUN_OPTIONS[option];
  if (o.kind === 'choice') return `${o.values.join(' | ')}${help ? `${help.startsWith('(') ? ' ' : ': '}${help}` : ''}`;
  if (o.kind === 'integer' || o.kind === 'number') return `${help}; ${requirementOf(option).replace(/^must be /, '')}`;
  return help;
}

/** Add the flags of these run options to a command. */
export function addRunOptions(command: Command, options: readonly OptionName[], overrides: Partial<Record<OptionName, FlagOverrides>> = {}): Command {
  for (const option of options) {
    const o = RUN_OPTIONS[option];
    if (o.flag === false) continue;
    const override = overrides[option] ?? {};
    const fallback = 'default' in override ? override.default : o.default;
    const help = helpOf(option, override.help ?? o.help);
    const names = [o.short, o.alias, flagOf(option)].filter(Boolean).join(', ');
    if (o.kind === 'boolean') {
      command.option(names, help, fallback as boolean);
      if (o.negation) command.option(`--no-${flagOf(option).slice(2)}`, o.negation);
      continue;
    }
    const parse = (text: string) => {
      try {
        return parseOption(option, text);
      } catch (e) {
        if (e instanceof ConfigError) throw new InvalidArgumentError(`${e.describe(flagOf)}.`);
        throw e;
      }
    };
    // A default of null (not set) or an empty list shows no default in --help.
    const shown = fallback === null || fallback === undefined || (Array.isArray(fallback) && fallback.length === 0) ? undefined : fallback;
    command.option(`${names} ${o.placeholder ?? '<value>'}`, help, parse, shown);
  }
  return command;
}

/**
 * The run specification of the flags given on the command line (a flag left out takes the
 * library's default, or with --resume the checkpoint's setting).
 */
export function specFromCommand(command: Command, options: readonly OptionName[]): RunSpec {
  const values = command.opts<Record<string, unknown>>();
  const spec: Record<string, unknown> = {};
  for (const option of options) if (command.getOptionValueSource(option) === 'cli') spec[option] = values[option];
  return spec as RunSpec;
}
