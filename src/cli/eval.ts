export async function evalCommand(_args: string[]): Promise<number> {
  return 0;
}
