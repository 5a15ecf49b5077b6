-- Languages (order 12): the language a person chose for the web client, kept with the
-- account, and the language of their mail (`en`, `de`, `es`; none: English, or the
-- browser's preference in the web client).
ALTER TABLE users ADD COLUMN language TEXT;
