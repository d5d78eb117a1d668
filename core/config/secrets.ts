/**
 * `${env:NAME}` and `${file:/path}` references, resolved at load. Resolved values are secrets:
 * they are collected so the logger can mask them, and no error message ever prints one.
 */
import { readFileSync } from 'node:fs';
import { isAbsolute, resolve } from 'node:path';

const REFERENCE = /\$\{(env|file):([^}]*)\}/g;

export interface ReferenceProblem {
  /** What is wrong, naming the variable or file, never a value. */
  message: string;
}

export interface ResolvedString {
  value: string;
  /** Values read from the environment or files: to be masked in logs. */
  secrets: string[];
  problems: ReferenceProblem[];
}


export function resolveReferences(text: string, configDirectory: string, env: NodeJS.ProcessEnv = process.env): ResolvedString {
  const secrets: string[] = [];
  const problems: ReferenceProblem[] = [];
  const value = text.replace(REFERENCE, (_match, source: 'env' | 'file', target: string) => {
    if (source === 'env') {
      const found = env[target];
      if (found === undefined) {
        problems.push({ message: `environment variable ${target} is not set (referenced as \${env:${target}})` });
        return '';
      }
      secrets.push(found);
      return found;
    }
    const path = isAbsolute(target) ? target : resolve(configDirectory, target);
    try {
      // A trailing newline is an artefact of how such files are written (echo > file), not part of the secret.
      const content = readFileSync(path, 'utf8').replace(/\r?\n$/, '');
      secrets.push(content);
      return content;
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      const why = code === 'ENOENT' ? 'does not exist' : code === 'EACCES' ? 'is not readable (permission denied)' : code === 'EISDIR' ? 'is a directory' : `cannot be read (${code ?? 'error'})`;
      problems.push({ message: `file ${path} ${why} (referenced as \${file:${target}})` });
      return '';
    }
  });
  return { value, secrets, problems };
}
