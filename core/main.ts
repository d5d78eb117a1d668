/** Process entry: run the CLI, flush stderr, exit with its code. */
import { main } from './cli.js';

const code = await main(process.argv.slice(2));
// Let the log lines on stderr drain before exiting.
process.stderr.write('', () => process.exit(code));
