/**
 * @module
 * Whether a secret is a walk along a keyboard or through Unicode (`qwertyuiop…`, `1qaz2wsx…`,
 * `abcdef…`): such a value passes the length and distinct-character checks and is found by anyone
 * who tries the obvious (probes 30d F2, 71a F2, 71d F2, 72b F5).
 */

/**
 * Keyboard layouts as rows of keys, each row's left edge in key widths from the top row's (a
 * staggered keyboard), unshifted and shifted: a walk along a row (`qwertyuiop`, `!@#$%^`), down a
 * column (`1qaz`, `!QAZ`, `qaz`), on another country's layout (`azertyuiop`, `qwertzuiop`,
 * Dvorak's `aoeuidhtns`), or mixing the two shifts (`1qaz@WSX`) is a walk.
 */
const LAYOUTS: readonly { offsets: readonly number[]; layers: readonly (readonly string[])[] }[] = [
  {
    offsets: [0, 1.5, 1.75, 2.25],
    layers: [
      ["`1234567890-=", "qwertyuiop[]\\", "asdfghjkl;'", "zxcvbnm,./"],
      ["~!@#$%^&*()_+", "QWERTYUIOP{}|", 'ASDFGHJKL:"', "ZXCVBNM<>?"],
    ],
  },
  {
    offsets: [0, 1.5, 1.75, 1.25],
    layers: [
      ["^1234567890ß´", "qwertzuiopü+", "asdfghjklöä#", "<yxcvbnm,.-"],
      ['°!"§$%&/()=?`', "QWERTZUIOPÜ*", "ASDFGHJKLÖÄ'", ">YXCVBNM;:_"],
    ],
  },
  {
    offsets: [0, 1.5, 1.75, 1.25],
    layers: [
      ["²&é\"'(-è_çà)=", "azertyuiop^$", "qsdfghjklmù*", "<wxcvbn,;:!"],
      ["³1234567890°+", "AZERTYUIOP¨£", "QSDFGHJKLM%µ", ">WXCVBN?./§"],
    ],
  },
  {
    offsets: [0, 1.5, 1.75, 2.25],
    layers: [
      ["`1234567890[]", "',.pyfgcrl/=\\", "aoeuidhtns-", ";qjkxbmwvz"],
      ["~!@#$%^&*(){}", '"<>PYFGCRL?+|', "AOEUIDHTNS_", ":QJKXBMWVZ"],
    ],
  },
];

interface KeyPlace {
  row: number;
  /** The key's left edge, in key widths. */
  x: number;
}

/** For each layout, where each character's key sits (the unshifted place where a key has two). */
const KEY_PLACES: readonly ReadonlyMap<string, KeyPlace>[] = LAYOUTS.map(({ offsets, layers }) => {
  const places = new Map<string, KeyPlace>();
  for (const rows of layers) {
    rows.forEach((keys, row) => {
      [...keys].forEach((key, i) => {
        if (!places.has(key)) places.set(key, { row, x: offsets[row]! + i });
      });
    });
  }
  return places;
});

/**
 * Whether two characters are keys that touch on the layout: side by side on a row, or on the rows
 * above and below with their edges less than a key apart.
 */
function touchingKeys(places: ReadonlyMap<string, KeyPlace>, a: string, b: string): boolean {
  const first = places.get(a);
  const second = places.get(b);
  if (first === undefined || second === undefined) return false;
  const across = Math.abs(first.x - second.x);
  if (first.row === second.row) return across === 1;
  return Math.abs(first.row - second.row) === 1 && across < 1;
}

/** Characters in a row, each next to the one before, that make a walk: three keys, two steps. */
const MIN_WALK_STEPS = 2;

/**
 * Whether more than two thirds of the value's steps (from one character to the next) are in walks:
 * runs of at least two steps each to the same character, the next or previous code point (`abc`,
 * `321`, emoji side by side in Unicode), or a key touching on one layout. Compared by code point,
 * so a character outside the BMP is one; and two such walks woven together, every other character
 * each (`a1b2c3…`, probe 72c A5). Random values: see the config test's generated shapes.
 */
export function isMostlyWalk(points: readonly string[]): boolean {
  // In any letter case too: `AbCdEf…` and `A1b2C3…` are the alphabet's walk (probe 75b F7).
  return walksOrWoven(points) || walksOrWoven(points.map((point) => point.toLowerCase()));
}

function walksOrWoven(points: readonly string[]): boolean {
  if (walksAlone(points)) return true;
  // Two walks woven together (`a1b2c3d4…`, `1q2w3e4r…`): each one of every other character.
  const even = points.filter((_, i) => i % 2 === 0);
  const odd = points.filter((_, i) => i % 2 === 1);
  return walksAlone(even) && walksAlone(odd);
}

function walksAlone(points: readonly string[]): boolean {
  const steps = points.length - 1;
  return KEY_PLACES.some((places) => {
    let inWalks = 0;
    let walk = 0;
    for (let i = 1; i <= steps; i++) {
      const before = points[i - 1]!;
      const here = points[i]!;
      if (
        Math.abs(here.codePointAt(0)! - before.codePointAt(0)!) <= 1 ||
        touchingKeys(places, before, here)
      ) {
        walk++;
        if (walk === MIN_WALK_STEPS) inWalks += walk;
        else if (walk > MIN_WALK_STEPS) inWalks++;
      } else {
        walk = 0;
      }
    }
    return inWalks * 3 > steps * 2;
  });
}
