# No retention prune on a publish (the publish path's batched DELETEs and sweeps).
p = 'src/glue/room.rs'; s = open(p).read()
old = '''        self.after_fan_out(room, fan);
        room.prune(now)?;'''
assert old in s, "publish's prune call not found"
s = s.replace(old, '''        self.after_fan_out(room, fan);''', 1)
open(p, 'w').write(s)
