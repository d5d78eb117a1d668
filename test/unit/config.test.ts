/**
 * The fleet config: valid configs load (and merge defaults), and a table of broken configs each
 * produce exactly the expected `line: path: message`.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile, readFile, mkdir, chmod, copyFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ConfigError, loadFleetConfig, type ConfigProblem } from '../../core/config/fleet-config.js';
import { fleetPluginProblems } from '../../core/registry.js';
import { isCronExpression } from '../../core/config/schema-validation.js';
import { SHARED_FIXTURES } from '../helpers/shared-fixtures.js';

const repo = fileURLToPath(new URL('../../', import.meta.url));
const userPlugins = join(repo, 'test/fixtures/user-storage-plugin');

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'walrus-config-'));
});
after(() => rm(dir, { recursive: true, force: true }));

const BASE = `version: 1
storages:
  local:
    plugin: file
    path: /tmp/walrus-store
servers:
  db1:
    dataDirectory: /var/lib/postgresql/15/main
`;

async function problemsOf(yaml: string, env: NodeJS.ProcessEnv = {}): Promise<string[]> {
  const file = join(dir, `c-${Math.random().toString(36).slice(2)}.yaml`);
  await writeFile(file, yaml);
  let problems: ConfigProblem[];
  try {
    const fleet = loadFleetConfig(file, { env });
    problems = await fleetPluginProblems(fleet);
  } catch (e) {
    if (!(e instanceof ConfigError)) throw e;
    problems = e.problems;
    assert.equal(e.exitCode, 2);
  }
  for (const p of problems) assert.equal(p.file, file, 'every problem names the file');
  return problems.map((p) => `${p.line}: ${p.path ? `${p.path}: ` : ''}${p.message}`);
}

describe('valid configs', () => {
  it('configs/local.yaml loads and resolves its one server', () => {
    const fleet = loadFleetConfig(join(repo, 'configs/local.yaml'));
    const s = fleet.servers.main;
    assert.equal(s.storage.plugin, 'file');
    assert.equal(s.prefix, 'main/');
    assert.equal(s.compression, 'lzo');
    assert.equal(s.encryption, null);
    assert.deepEqual(s.schedule, { backup: '0 2 * * *', retention: '0 18 * * *' });
    assert.equal(s.retention.keepBackups, 8);
  });

  it('configs/example-fleet.yaml loads with its key files and passphrase, merging defaults per server', async () => {
    // The example points at /etc/walrus/*.asc; load a copy pointed at a temp folder instead.
    const keys = join(dir, 'etc-walrus');
    await mkdir(keys, { recursive: true });
    await copyFile(`${SHARED_FIXTURES}/wal-e-gpg/public-key.asc`, join(keys, 'ops.pub.asc')).catch(() => writeFile(join(keys, 'ops.pub.asc'), 'PUBLIC'));
    await writeFile(join(keys, 'ops.sec.asc'), 'SECRET KEY MATERIAL');
    const text = (await readFile(join(repo, 'configs/example-fleet.yaml'), 'utf8')).replaceAll('/etc/walrus/', `${keys}/`);
    const file = join(dir, 'example-fleet.yaml');
    await writeFile(file, text);
    const fleet = loadFleetConfig(file, { env: { WALRUS_GPG_PASSPHRASE: 'correct horse' } });
    assert.deepEqual(Object.keys(fleet.servers), ['db1', 'version', 'customers', 'sentry']);
    assert.equal(fleet.servers.db1.storage.name, 'prod');
    assert.equal(fleet.servers.version.storage.name, 'secondary');
    assert.equal(fleet.servers.sentry.schedule.backup, '30 3 * * *');
    assert.equal(fleet.servers.sentry.schedule.retention, '0 18 * * *');
    assert.equal(fleet.servers.customers.retention.keepBackups, 8);
    assert.equal(fleet.servers.db1.encryption?.name, 'ops');
    assert.equal(fleet.servers.db1.encryption?.options.passphrase, 'correct horse');
    assert.ok(fleet.secrets.includes('correct horse') && fleet.secrets.includes('SECRET KEY MATERIAL'), 'resolved values are recorded as secrets');
    // every storage and key block also passes its plugin's own options schema
    assert.deepEqual(await fleetPluginProblems(fleet), []);
  });

  it('configs/local.yaml passes its plugins\' option schemas', async () => {
    assert.deepEqual(await fleetPluginProblems(loadFleetConfig(join(repo, 'configs/local.yaml'))), []);
  });

  it('server settings override defaults; prefix defaults to the server name', async () => {
    const file = join(dir, 'merge.yaml');
    await writeFile(file, `${BASE}    poolSize: 2\n  db2:\n    dataDirectory: /srv/db2\ndefaults:\n  poolSize: 6\n  compression: none\n`);
    const fleet = loadFleetConfig(file, { env: {} });
    assert.equal(fleet.servers.db1.poolSize, 2);
    assert.equal(fleet.servers.db2.poolSize, 6);
    assert.equal(fleet.servers.db2.compression, 'none');
    assert.equal(fleet.servers.db2.prefix, 'db2/');
  });
});

describe('broken configs: each names the line, the YAML path and what is wrong', () => {
  const cases: Array<{ name: string; yaml: string; env?: NodeJS.ProcessEnv; expect: string[] }> = [
    {
      name: 'YAML syntax error',
      yaml: 'version: 1\nstorages:\n  local: { plugin: file, path: /x\n',
      expect: [/* filled below */],
    },
    {
      name: 'unknown top-level key (typo)',
      yaml: `${BASE}storage:\n  x: 1\n`,
      expect: ['9: storage: unknown key (check the spelling; see the README config reference)'],
    },
    {
      name: 'unknown key inside a server',
      yaml: `${BASE}    retension:\n      keepBackups: 3\n`,
      expect: ['9: servers.db1.retension: unknown key (check the spelling; see the README config reference)'],
    },
    {
      name: 'wrong type',
      yaml: `${BASE}    poolSize: four\n`,
      expect: ['9: servers.db1.poolSize: must be an integer from 1 to 64'],
    },
    {
      name: 'server references a storage that does not exist',
      yaml: `${BASE}    storage: s3prod\n`,
      expect: ["9: servers.db1.storage: storage 's3prod' is not defined under storages (defined: local)"],
    },
    {
      name: 'server references a key that does not exist',
      yaml: `${BASE}    encryption: ops\n`,
      expect: ["9: servers.db1.encryption: key 'ops' is not defined under keys (no keys defined; or use none)"],
    },
    {
      name: 'missing ${env:} variable',
      yaml: `${BASE}keys:\n  ops:\n    plugin: gpg\n    publicKey: PUB\n    passphrase: \${env:WALRUS_TEST_MISSING_PASSPHRASE}\n`,
      expect: ['13: keys.ops.passphrase: environment variable WALRUS_TEST_MISSING_PASSPHRASE is not set (referenced as ${env:WALRUS_TEST_MISSING_PASSPHRASE})'],
    },
    {
      name: 'unreadable ${file:}',
      yaml: `${BASE}keys:\n  ops:\n    plugin: gpg\n    publicKey: \${file:/nonexistent/walrus/ops.asc}\n`,
      expect: ['12: keys.ops.publicKey: file /nonexistent/walrus/ops.asc does not exist (referenced as ${file:/nonexistent/walrus/ops.asc})'],
    },
    {
      name: 'bad cron expression',
      yaml: `${BASE}    schedule:\n      backup: "0 25 * * *"\n`,
      expect: ['10: servers.db1.schedule.backup: is not a valid cron expression (5 fields: minute hour day-of-month month day-of-week, or @hourly/@daily/@weekly/@monthly)'],
    },
    {
      name: 'negative retention',
      yaml: `${BASE}    retention:\n      keepBackups: -1\n`,
      expect: ['10: servers.db1.retention.keepBackups: must be an integer ≥ 1'],
    },
    {
      name: 'unknown plugin',
      yaml: BASE.replace('plugin: file', 'plugin: ftp'),
      expect: ["4: storages.local.plugin: unknown plugin 'ftp': not built in (file, s3, lzo, lz4, zstd, gpg, postgres, cron-export) and no such package or file"],
    },
    {
      name: 'user plugin without a manifest',
      yaml: BASE.replace('plugin: file', `plugin: ${join(userPlugins, 'no-manifest.js')}`).replace('    path: /tmp/walrus-store\n', ''),
      expect: ['4: storages.local.plugin: does not export a manifest'],
    },
    {
      name: 'user plugin of the wrong kind',
      yaml: BASE.replace('plugin: file', `plugin: ${join(userPlugins, 'wrong-kind.js')}`).replace('    path: /tmp/walrus-store\n', ''),
      expect: [`4: storages.local.plugin: plugin '${join(userPlugins, 'wrong-kind.js')}' is a codec plugin; a storage plugin is needed here`],
    },
    {
      name: 'user plugin file that does not exist',
      yaml: BASE.replace('plugin: file', 'plugin: ./missing-plugin.js'),
      expect: [/* filled below: path depends on temp dir */],
    },
    {
      name: "plugin options fail the plugin's own schema",
      yaml: BASE.replace('path: /tmp/walrus-store', 'pth: /tmp/walrus-store'),
      expect: ["3: storages.local: missing required key 'path'", '5: storages.local.pth: unknown key (check the spelling; see the README config reference)'],
    },
    {
      name: 'unknown compression',
      yaml: `${BASE}defaults:\n  compression: zip\n`,
      expect: ["10: defaults.compression: unknown plugin 'zip': not built in (file, s3, lzo, lz4, zstd, gpg, postgres, cron-export) and no such package or file"],
    },
    {
      name: 'compression names a plugin that is not a codec',
      yaml: `${BASE}    compression: s3\n`,
      expect: ["9: servers.db1.compression: plugin 's3' is a storage plugin; compression needs a codec plugin (lzo, lz4, zstd, none)"],
    },
    {
      name: 'server without a data directory',
      yaml: `${BASE}  db2:\n    prefix: db2\n`,
      expect: ["9: servers.db2: missing required key 'dataDirectory'"],
    },
    {
      name: 'unsupported version',
      yaml: BASE.replace('version: 1', 'version: 2'),
      expect: ['1: version: must be 1 (the only config version so far)'],
    },
    {
      name: 'two servers writing to the same storage and prefix',
      yaml: `${BASE}    prefix: shared\n  db2:\n    dataDirectory: /srv/db2\n    prefix: shared\n`,
      expect: ["12: servers.db2.prefix: same storage 'local' and prefix 'shared/' as server db1: each server needs its own prefix"],
    },
    {
      name: 'duplicate key',
      yaml: `${BASE}  db1:\n    dataDirectory: /srv/again\n`,
      expect: [],
    },
  ];

  for (const c of cases) {
    it(c.name, async () => {
      const got = await problemsOf(c.yaml, c.env);
      if (c.name === 'YAML syntax error') {
        assert.equal(got.length >= 1, true);
        assert.deepEqual(got, ['4: YAML syntax error: Flow map in block collection must be sufficiently indented and end with a }']);
      } else if (c.name === 'user plugin file that does not exist') {
        assert.deepEqual(got, [`4: storages.local.plugin: file ${join(dir, 'missing-plugin.js')} does not exist`]);
      } else if (c.name === 'duplicate key') {
        assert.equal(got.length, 1);
        assert.deepEqual(got, ['9: YAML syntax error: Map keys must be unique']);
      } else assert.deepEqual(got, c.expect);
    });
  }

  it('never prints the value of a resolved secret in a problem', async () => {
    const got = await problemsOf(`${BASE}keys:\n  ops:\n    plugin: gpg\n    publicKey: \${env:WALRUS_TEST_PUB}\n    passphrase: 42\n`, { WALRUS_TEST_PUB: 'TOPSECRETVALUE' });
    assert.ok(got.length >= 1);
    assert.ok(!got.join('\n').includes('TOPSECRETVALUE'));
  });

  it('an unreadable (permission denied) ${file:} names the file', { skip: process.getuid?.() === 0 ? 'root reads every file' : false }, async () => {
    const f = join(dir, 'unreadable.asc');
    await writeFile(f, 'x');
    await chmod(f, 0o000);
    const got = await problemsOf(`${BASE}keys:\n  ops:\n    plugin: gpg\n    publicKey: \${file:${f}}\n`);
    assert.deepEqual(got, [`12: keys.ops.publicKey: file ${f} is not readable (permission denied) (referenced as \${file:${f}})`]);
  });
});

describe('cron expressions', () => {
  it('accepts what cron(8) accepts and refuses the rest', () => {
    for (const ok of ['0 2 * * *', '*/15 * * * *', '0 0 1-7 * mon', '30 3 * * 1,3,5', '@daily', '0 18 * jan-mar sun']) assert.ok(isCronExpression(ok), ok);
    for (const bad of ['0 25 * * *', '* * * *', '60 * * * *', '0 0 0 * *', 'every day', '*/0 * * * *', '0 0 * * * *']) assert.ok(!isCronExpression(bad), bad);
  });
});
